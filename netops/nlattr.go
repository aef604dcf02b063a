package netops

import "github.com/hairpinctl/hairpinctl/netops/internal/nlattr"

// The attribute walker is netops/internal/nlattr, shared with the domain
// packages; this is its name inside netops.

// forEachAttr is nlattr.ForEach.
func forEachAttr(b []byte, fn func(typ uint16, val []byte)) { nlattr.ForEach(b, fn) }
