// Package nlattr walks netlink attributes (struct rtattr / struct nlattr)
// in place, without allocating: the one attribute walker of hairpinctl's
// own netlink readers (the AF_BRIDGE link dump, nf_tables rules, conntrack
// events).
package nlattr

import (
	"encoding/binary"
	"errors"
)

// Netlink attribute layout: a 4-byte header of length and type, the
// value, padding to 4 bytes.
const (
	// HeaderLen is the size of an attribute's header.
	HeaderLen = 4
	alignTo   = 4
	// typeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
	typeMask = 0x3fff
)

// ErrBad means bytes that should hold netlink attributes do not.
var ErrBad = errors.New("malformed netlink attribute")

// Next splits the first netlink attribute off b without allocating: its
// type without the nested and byte-order flags, its payload, and the
// rest. ok is false when b holds no complete attribute.
func Next(b []byte) (typ uint16, payload, rest []byte, ok bool) {
	if len(b) < HeaderLen {
		return 0, nil, nil, false
	}
	l := int(binary.NativeEndian.Uint16(b))
	if l < HeaderLen || l > len(b) {
		return 0, nil, nil, false
	}
	typ = binary.NativeEndian.Uint16(b[2:]) & typeMask
	aligned := min((l+alignTo-1)&^(alignTo-1), len(b))
	return typ, b[HeaderLen:l], b[aligned:], true
}

// Walk calls fn with each attribute in b until fn returns false; an
// attribute cut short is ErrBad.
func Walk(b []byte, fn func(typ uint16, val []byte) bool) error {
	for len(b) > 0 {
		typ, val, rest, ok := Next(b)
		if !ok {
			return ErrBad
		}
		if !fn(typ, val) {
			return nil
		}
		b = rest
	}
	return nil
}

// ForEach calls fn with each attribute in b, stopping quietly at one cut
// short: dumps are read leniently.
func ForEach(b []byte, fn func(typ uint16, val []byte)) {
	_ = Walk(b, func(typ uint16, val []byte) bool { fn(typ, val); return true })
}
