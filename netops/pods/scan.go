package pods

import (
	"strconv"
	"unicode/utf8"

	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// scanCachedInfo fills ci from a cache entry in one pass over its bytes,
// taking only the fields cachedInfo has: the same answer as
// json.Unmarshal into cachedInfo, for the entries libcni writes, without
// reflection or a second pass to validate. A node lists its ports with the
// pods' names on every `ports`, and encoding/json spent more time on the
// cache than the kernel on the listing.
//
// It answers only when it is sure to agree with encoding/json: ok is false
// for anything it does not handle the same way (a wanted string with an
// escape or invalid UTF-8, a key that differs from a wanted one only in
// case, a value of another type than the field's, malformed JSON), and
// the caller then decodes with encoding/json. FuzzScanCachedInfo holds it
// to that.
//
// ci's lists are appended to from empty, keeping their capacity; a result
// is read into spare; strings of the fields that many entries share are
// taken from intern when there, and added while it is small.
func scanCachedInfo(data []byte, ci *cachedInfo, spare *cachedResult, intern map[string]string) (ok bool) {
	s := scanner{b: data, spare: spare, intern: intern}
	s.ws()
	if !s.object(func(key []byte) bool {
		switch string(key) {
		case "kind":
			return s.shared(&ci.Kind)
		case "containerId":
			return s.str(&ci.ContainerID)
		case "ifName":
			return s.shared(&ci.IfName)
		case "networkName":
			return s.shared(&ci.NetworkName)
		case "netns":
			return s.str(&ci.NetNS)
		case "cniArgs":
			return s.args(&ci.CniArgs)
		case "result":
			return s.result(&ci.Result)
		}
		return !foldsTo(key, "kind", "containerId", "ifName", "networkName", "netns", "cniArgs", "result") && s.skip()
	}) {
		return false
	}
	s.ws()
	return s.i == len(s.b)
}

// scanner walks JSON text; every method returns false on what it does not
// take, leaving the rest to encoding/json.
type scanner struct {
	b      []byte
	i      int
	depth  int
	spare  *cachedResult
	intern map[string]string
}

// maxIntern bounds the strings a parser keeps for reuse.
const maxIntern = 64

// maxDepth bounds nesting; deeper text is left to encoding/json, which
// has a limit of its own.
const maxDepth = 100

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) lit(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

// object calls field for each key, positioned at the key's value, which
// field must consume.
//
// A key that is not plain ASCII, or a key given twice, ends the scan:
// encoding/json matches keys to fields with Unicode case folding, and
// decodes a repeated key's value over the first one's.
func (s *scanner) object(field func(key []byte) bool) bool {
	if s.depth++; s.depth > maxDepth || !s.eat('{') {
		return false
	}
	defer func() { s.depth-- }()
	if s.eat('}') {
		return true
	}
	var seenBuf [16][]byte
	seen := seenBuf[:0]
	for {
		if s.peek() != '"' {
			return false
		}
		key, plain := s.rawString()
		if key == nil || !plain || !s.eat(':') {
			return false
		}
		for _, c := range key {
			if c >= utf8.RuneSelf {
				return false
			}
		}
		for _, k := range seen {
			if len(k) == len(key) && asciiFoldBytes(k, key) {
				return false
			}
		}
		seen = append(seen, key)
		s.ws()
		if !field(key) {
			return false
		}
		if s.eat(',') {
			continue
		}
		return s.eat('}')
	}
}

// array calls elem for each element, positioned at it.
func (s *scanner) array(elem func() bool) bool {
	if s.depth++; s.depth > maxDepth || !s.eat('[') {
		return false
	}
	defer func() { s.depth-- }()
	if s.eat(']') {
		return true
	}
	for {
		s.ws()
		if !elem() {
			return false
		}
		if s.eat(',') {
			continue
		}
		return s.eat(']')
	}
}

// rawString reads a string at s.i and returns its contents between the
// quotes (nil when it is malformed) and whether it is plain: no escape, no
// invalid UTF-8, so the contents are the value.
func (s *scanner) rawString() (contents []byte, plain bool) {
	start := s.i + 1
	plain = true
	for i := start; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			v := s.b[start:i]
			if plain && !utf8.Valid(v) {
				plain = false
			}
			return v, plain
		case c == '\\':
			plain = false
			i++
			if i >= len(s.b) {
				return nil, false
			}
			switch s.b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(s.b) {
					return nil, false
				}
				for _, h := range s.b[i+1 : i+5] {
					if !isHex(h) {
						return nil, false
					}
				}
				i += 4
			default:
				return nil, false
			}
		case c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// str reads a plain string into dst; null leaves dst as it is, as
// encoding/json does.
func (s *scanner) str(dst *string) bool {
	if s.lit("null") {
		return true
	}
	if s.peek() != '"' {
		return false
	}
	v, plain := s.rawString()
	if v == nil || !plain {
		return false
	}
	*dst = string(v)
	return true
}

// shared is str for a value many entries have alike: made once.
func (s *scanner) shared(dst *string) bool {
	if s.lit("null") {
		return true
	}
	if s.peek() != '"' {
		return false
	}
	v, plain := s.rawString()
	if v == nil || !plain {
		return false
	}
	if in, ok := s.intern[string(v)]; ok {
		*dst = in
		return true
	}
	*dst = string(v)
	if s.intern != nil && len(s.intern) < maxIntern {
		s.intern[*dst] = *dst
	}
	return true
}

// raw reads any string's JSON text, quotes included, for a cniArg.
func (s *scanner) raw(dst *rawJSON) bool {
	start := s.i
	if s.peek() != '"' {
		return false
	}
	if v, _ := s.rawString(); v == nil {
		return false
	}
	*dst = rawJSON(s.b[start:s.i])
	return true
}

// args reads cniArgs: an array of [key, value] string pairs.
func (s *scanner) args(dst *[]cniArg) bool {
	if s.lit("null") {
		*dst = nil
		return true
	}
	*dst = (*dst)[:0]
	return s.array(func() bool {
		var kv cniArg
		n := 0
		if !s.array(func() bool {
			if n == 2 {
				return false // encoding/json would drop the rest: not libcni's shape
			}
			n++
			return s.raw(&kv[n-1])
		}) || n != 2 {
			return false
		}
		*dst = append(*dst, kv)
		return true
	})
}

// result reads the fields of cachedResult.
func (s *scanner) result(dst **cachedResult) bool {
	if s.lit("null") {
		*dst = nil
		return true
	}
	r := *dst
	if r == nil {
		r = s.spare
		if r == nil {
			r = &cachedResult{}
		}
	}
	ok := s.object(func(key []byte) bool {
		switch string(key) {
		case "cniVersion":
			return s.shared(&r.CNIVersion)
		case "interfaces":
			if s.lit("null") {
				r.Interfaces = nil
				return true
			}
			r.Interfaces = r.Interfaces[:0]
			return s.array(func() bool {
				var ifc types100.Interface
				if !s.object(func(key []byte) bool {
					switch string(key) {
					case "name":
						return s.shared(&ifc.Name)
					case "mac":
						return s.shared(&ifc.Mac)
					case "sandbox":
						return s.str(&ifc.Sandbox)
					// Not used, but read only when encoding/json
					// would take them: of the fields' types.
					case "mtu":
						return s.lit("null") || s.intNumber()
					case "socketPath", "pciID":
						return s.lit("null") || s.peek() == '"' && s.skip()
					}
					return !foldsTo(key, "name", "mac", "sandbox", "mtu", "socketPath", "pciID") && s.skip()
				}) {
					return false
				}
				r.Interfaces = append(r.Interfaces, ifc)
				return true
			})
		case "ips":
			if s.lit("null") {
				r.IPs = nil
				return true
			}
			r.IPs = r.IPs[:0]
			return s.array(func() bool {
				var ip cachedIP
				if !s.object(func(key []byte) bool {
					switch string(key) {
					case "address":
						return s.str(&ip.Address)
					case "interface":
						return s.index(&ip.Interface)
					}
					return !foldsTo(key, "address", "interface") && s.skip()
				}) {
					return false
				}
				r.IPs = append(r.IPs, ip)
				return true
			})
		}
		return !foldsTo(key, "cniVersion", "interfaces", "ips") && s.skip()
	})
	if ok {
		*dst = r
	}
	return ok
}

// index reads an ips[].interface: a small non-negative integer, or null.
func (s *scanner) index(dst **int) bool {
	if s.lit("null") {
		*dst = nil
		return true
	}
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	digits := s.b[start:s.i]
	if len(digits) == 0 || len(digits) > 6 || (len(digits) > 1 && digits[0] == '0') {
		return false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return false
		}
	}
	n, err := strconv.Atoi(string(digits))
	if err != nil {
		return false
	}
	*dst = &n
	return true
}

// skip passes over any value, checking its syntax.
func (s *scanner) skip() bool {
	switch c := s.peek(); {
	case c == '{':
		return s.object(func([]byte) bool { return s.skip() })
	case c == '[':
		return s.array(s.skip)
	case c == '"':
		v, _ := s.rawString()
		return v != nil
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return false
}

// intNumber passes over a JSON number that encoding/json takes into an
// int: no fraction or exponent, within the int's range.
func (s *scanner) intNumber() bool {
	if c := s.peek(); c != '-' && (c < '0' || c > '9') {
		return false
	}
	start := s.i
	if !s.number() {
		return false
	}
	_, err := strconv.ParseInt(string(s.b[start:s.i]), 10, strconv.IntSize)
	return err == nil
}

// number passes over a JSON number.
func (s *scanner) number() bool {
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if digits() == 0 {
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

// foldsTo reports whether key matches one of names the way encoding/json
// matches keys to fields, without being equal to it: such a key would set
// a field, so the scanner leaves the entry to encoding/json.
func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if len(key) == len(n) && string(key) != n && asciiFold(key, n) {
			return true
		}
	}
	return false
}

func asciiFold(a []byte, b string) bool {
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func asciiFoldBytes(a, b []byte) bool {
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
