package netops

import "encoding/binary"

// Netlink attribute layout (struct rtattr / struct nlattr): a 4-byte
// header of length and type, the value, padding to 4 bytes.
const (
	sizeofRtAttr = 4
	rtaAlignTo   = 4
	// attrTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
	attrTypeMask = 0x3fff
)

// forEachAttr walks netlink attributes in b without allocating.
func forEachAttr(b []byte, fn func(typ uint16, val []byte)) {
	for len(b) >= sizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4])
		if l < sizeofRtAttr || l > len(b) {
			return
		}
		fn(t&attrTypeMask, b[sizeofRtAttr:l])
		l = (l + rtaAlignTo - 1) &^ (rtaAlignTo - 1)
		if l > len(b) {
			return
		}
		b = b[l:]
	}
}
