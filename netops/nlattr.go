package netops

import (
	"encoding/binary"
	"errors"
)

// Netlink attribute layout (struct rtattr / struct nlattr): a 4-byte
// header of length and type, the value, padding to 4 bytes.
const (
	sizeofRtAttr = 4
	rtaAlignTo   = 4
	// attrTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
	attrTypeMask = 0x3fff
)

// errBadAttr: bytes that should hold netlink attributes do not.
var errBadAttr = errors.New("malformed netlink attribute")

// nextAttr splits the first netlink attribute off b without allocating:
// its type without the nested and byte-order flags, its payload, and the
// rest. ok is false when b holds no complete attribute.
func nextAttr(b []byte) (typ uint16, payload, rest []byte, ok bool) {
	if len(b) < sizeofRtAttr {
		return 0, nil, nil, false
	}
	l := int(binary.NativeEndian.Uint16(b))
	if l < sizeofRtAttr || l > len(b) {
		return 0, nil, nil, false
	}
	typ = binary.NativeEndian.Uint16(b[2:]) & attrTypeMask
	aligned := min((l+rtaAlignTo-1)&^(rtaAlignTo-1), len(b))
	return typ, b[sizeofRtAttr:l], b[aligned:], true
}

// walkAttrs calls fn with each attribute in b until fn returns false; an
// attribute cut short is errBadAttr.
func walkAttrs(b []byte, fn func(typ uint16, val []byte) bool) error {
	for len(b) > 0 {
		typ, val, rest, ok := nextAttr(b)
		if !ok {
			return errBadAttr
		}
		if !fn(typ, val) {
			return nil
		}
		b = rest
	}
	return nil
}

// forEachAttr calls fn with each attribute in b, stopping quietly at one
// cut short: dumps are read leniently.
func forEachAttr(b []byte, fn func(typ uint16, val []byte)) {
	_ = walkAttrs(b, func(typ uint16, val []byte) bool { fn(typ, val); return true })
}
