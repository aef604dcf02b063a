package netops

import "github.com/hairpinctl/hairpinctl/netops/internal/nlattr"

// The attribute walker is netops/internal/nlattr, shared with the domain
// packages; these are its names inside netops.

// errBadAttr: bytes that should hold netlink attributes do not.
var errBadAttr = nlattr.ErrBad

// nextAttr is nlattr.Next.
func nextAttr(b []byte) (typ uint16, payload, rest []byte, ok bool) { return nlattr.Next(b) }

// walkAttrs is nlattr.Walk.
func walkAttrs(b []byte, fn func(typ uint16, val []byte) bool) error { return nlattr.Walk(b, fn) }

// forEachAttr is nlattr.ForEach.
func forEachAttr(b []byte, fn func(typ uint16, val []byte)) { nlattr.ForEach(b, fn) }
