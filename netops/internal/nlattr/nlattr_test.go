package nlattr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// attr builds one attribute as the kernel lays it out: length, type,
// value, padding to 4 bytes.
func attr(typ uint16, val []byte) []byte {
	b := make([]byte, 4, 4+len(val)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(val)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestNext(t *testing.T) {
	two := append(attr(1, []byte{0xaa, 0xbb, 0xcc}), attr(2, []byte{1, 2, 3, 4})...)
	tests := []struct {
		name    string
		b       []byte
		typ     uint16
		payload []byte
		rest    []byte
		ok      bool
	}{
		{"padded value, then the next", two, 1, []byte{0xaa, 0xbb, 0xcc}, two[8:], true},
		{"nested and byte-order flags dropped", attr(3|0x8000|0x4000, []byte{9, 9, 9, 9}), 3, []byte{9, 9, 9, 9}, []byte{}, true},
		{"empty value", attr(7, nil), 7, []byte{}, []byte{}, true},
		{"last attribute without its padding", attr(5, []byte{1})[:5], 5, []byte{1}, []byte{}, true},
		{"short header", []byte{8, 0, 1}, 0, nil, nil, false},
		{"length past the end", attr(1, []byte{1, 2, 3, 4})[:7], 0, nil, nil, false},
		{"length below the header", []byte{3, 0, 1, 0}, 0, nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, payload, rest, ok := Next(tt.b)
			if ok != tt.ok || typ != tt.typ || !bytes.Equal(payload, tt.payload) || !bytes.Equal(rest, tt.rest) {
				t.Errorf("Next = %d %x %x %v, want %d %x %x %v", typ, payload, rest, ok, tt.typ, tt.payload, tt.rest, tt.ok)
			}
		})
	}
}

func TestWalkAndForEach(t *testing.T) {
	b := append(append(attr(1, []byte{1}), attr(2, []byte{2, 2})...), attr(3, []byte{3, 3, 3})...)
	var got []uint16
	if err := Walk(b, func(typ uint16, val []byte) bool {
		if len(val) != int(typ) {
			t.Errorf("attribute %d has %d bytes of value, want %d", typ, len(val), typ)
		}
		got = append(got, typ)
		return typ < 2
	}); err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("Walk stopped after %v, want [1 2]", got)
	}

	cut := append(attr(1, []byte{1}), 0xff, 0)
	if err := Walk(cut, func(uint16, []byte) bool { return true }); !errors.Is(err, ErrBad) {
		t.Errorf("Walk over a cut attribute = %v, want ErrBad", err)
	}
	n := 0
	ForEach(cut, func(uint16, []byte) { n++ })
	if n != 1 {
		t.Errorf("ForEach over a cut attribute saw %d attributes, want the 1 before the cut", n)
	}
}
