package commands

import (
	"encoding/json"
	"io"
	"math"
	"runtime"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/hairpinctl/hairpinctl/netops"
)

// writeServicesJSON writes svcs as writeJSON would (a two-space indented
// array) but without reflection and on every core: with 10,000 services
// encoding/json's re-indenting pass alone took longer than parsing the
// rules. TestServicesJSONMatchesEncodingJSON keeps the two identical,
// field for field.
func writeServicesJSON(w io.Writer, svcs []netops.Service) error {
	if len(svcs) == 0 {
		_, err := io.WriteString(w, "[]\n")
		return err
	}
	if _, err := io.WriteString(w, "[\n"); err != nil {
		return err
	}
	// Rounds of batch×workers services: the workers fill their buffers in
	// parallel, then the buffers are written in order and reused, so the
	// output is never held whole.
	const batch = 256
	workers := min(runtime.GOMAXPROCS(0), (len(svcs)+batch-1)/batch)
	bufs := make([][]byte, workers)
	warmed := make([]byte, workers) // where warm's results go
	memos := make([]floatMemo, workers)
	for start := 0; start < len(svcs); start += batch * workers {
		var wg sync.WaitGroup
		for i := range workers {
			lo := start + i*batch
			hi := min(lo+batch, len(svcs))
			bufs[i] = bufs[i][:0]
			if lo >= hi {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := bufs[i]
				warmed[i] = warm(svcs[lo:hi])
				for j := lo; j < hi; j++ {
					b = appendServiceJSON(b, &svcs[j], &memos[i])
					if j < len(svcs)-1 {
						b = append(b, ',')
					}
					b = append(b, '\n')
				}
				bufs[i] = b
			}()
		}
		wg.Wait()
		for _, b := range bufs {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
	}
	_, err := io.WriteString(w, "]\n")
	return err
}

// warm reads the first and last byte of the strings every service's JSON
// holds (names, addresses, chains; not the optional fields), before they
// are encoded (its result is stored, so that the reads stay). The strings
// were made while the rules streamed and lie scattered over the heap: the
// encoder's byte loops wait for each cache miss in turn, where these
// independent reads wait for many at once. With 10,000 services the JSON
// took a median 10.7 ms before, 8.0 after (15 traced runs each).
func warm(svcs []netops.Service) (x byte) {
	for i := range svcs {
		s := &svcs[i]
		x ^= ends(s.Namespace) ^ ends(s.Name) ^ ends(s.PortName) ^ ends(s.ClusterIP) ^ ends(s.Chain)
		for j := range s.Endpoints {
			e := &s.Endpoints[j]
			x ^= ends(e.IP) ^ ends(e.Chain)
		}
	}
	return x
}

// ends returns the first and last bytes of s, xored.
func ends(s string) byte {
	if s == "" {
		return 0
	}
	return s[0] ^ s[len(s)-1]
}

// jsonWriter appends `,` and "key": value lines at one indent level, after
// an object's first field.
type jsonWriter struct {
	b      []byte
	indent string
}

func (j *jsonWriter) key(k string) {
	j.b = append(j.b, ',', '\n')
	j.b = append(j.b, j.indent...)
	// Keys are this file's own field names: plain ASCII, nothing to escape.
	j.b = append(j.b, '"')
	j.b = append(j.b, k...)
	j.b = append(j.b, '"', ':', ' ')
}

func (j *jsonWriter) str(k, v string) { j.key(k); j.b = appendJSONString(j.b, v) }
func (j *jsonWriter) int(k string, v int) {
	j.key(k)
	j.b = strconv.AppendInt(j.b, int64(v), 10)
}
func (j *jsonWriter) bool(k string, v bool) { j.key(k); j.b = strconv.AppendBool(j.b, v) }

// floatMemo remembers how recent floats were spelled. A table's
// probabilities repeat (1/5, 1/4, 1/3, 1/2 in every service of five
// endpoints), and formatting them was a third of the JSON's CPU.
type floatMemo struct {
	bits [64]uint64
	set  [64]bool
	text [64][]byte
}

// floatSlot spreads a float's bits over the memo's 64 slots: the high
// half (sign, exponent: all that tells 1, 0.5 and 0.25 apart) is folded
// into the low before Fibonacci hashing, which alone put 1 and 1/3 in one
// slot.
func floatSlot(u uint64) uint64 {
	u ^= u >> 32
	return u * 0x9E3779B97F4A7C15 >> 58
}

// holds reports whether f's spelling is in the memo, and its slot.
func (m *floatMemo) holds(f float64) (slot uint64, ok bool) {
	u := math.Float64bits(f)
	i := floatSlot(u)
	return i, m.set[i] && m.bits[i] == u
}

func (m *floatMemo) append(b []byte, f float64) []byte {
	i, ok := m.holds(f)
	if ok {
		return append(b, m.text[i]...)
	}
	u := math.Float64bits(f)
	start := len(b)
	b = appendJSONFloat(b, f)
	m.bits[i], m.set[i] = u, true
	m.text[i] = append(m.text[i][:0], b[start:]...)
	return b
}

// strs writes a string array (callers leave out empty fields).
func (j *jsonWriter) strs(k string, v []string) { jsonArray(j, k, v, appendJSONString) }

// ints writes an int array (callers leave out empty fields).
func (j *jsonWriter) ints(k string, v []int) {
	jsonArray(j, k, v, func(b []byte, n int) []byte { return strconv.AppendInt(b, int64(n), 10) })
}

// jsonArray writes v one element a line, indented one level deeper, as
// json.MarshalIndent does; an empty array is [].
func jsonArray[T any](j *jsonWriter, k string, v []T, elem func([]byte, T) []byte) {
	j.key(k)
	if len(v) == 0 {
		j.b = append(j.b, "[]"...)
		return
	}
	j.b = append(j.b, '[')
	for i, x := range v {
		if i > 0 {
			j.b = append(j.b, ',')
		}
		j.b = append(j.b, '\n')
		j.b = append(j.b, j.indent...)
		j.b = append(j.b, "  "...)
		j.b = elem(j.b, x)
	}
	j.b = append(j.b, '\n')
	j.b = append(j.b, j.indent...)
	j.b = append(j.b, ']')
}

// appendServiceJSON appends one array element (indent "  ") in the field
// order and with the omitempty rules of netops.Service's JSON tags. The
// fields every service has are written with their key, indent and comma as
// one literal: looking keys up and indenting them one append at a time was
// a fifth of the JSON's CPU.
func appendServiceJSON(b []byte, s *netops.Service, floats *floatMemo) []byte {
	b = append(b, "  {\n    \"namespace\": "...)
	b = appendJSONString(b, s.Namespace)
	b = append(b, ",\n    \"name\": "...)
	b = appendJSONString(b, s.Name)
	b = append(b, ",\n    \"portName\": "...)
	b = appendJSONString(b, s.PortName)
	b = append(b, ",\n    \"protocol\": "...)
	b = appendJSONString(b, s.Protocol)
	b = append(b, ",\n    \"clusterIP\": "...)
	b = appendJSONString(b, s.ClusterIP)
	b = append(b, ",\n    \"port\": "...)
	b = strconv.AppendInt(b, int64(s.Port), 10)
	b = append(b, ",\n    \"chain\": "...)
	b = appendJSONString(b, s.Chain)
	b = append(b, ",\n    \"endpoints\": "...)
	switch {
	case s.Endpoints == nil:
		b = append(b, "null"...)
	case len(s.Endpoints) == 0:
		b = append(b, "[]"...)
	default:
		b = append(b, '[')
		for i := range s.Endpoints {
			if i > 0 {
				b = append(b, ',')
			}
			e := &s.Endpoints[i]
			b = append(b, "\n      {\n        \"ip\": "...)
			b = appendJSONString(b, e.IP)
			b = append(b, ",\n        \"port\": "...)
			b = strconv.AppendInt(b, int64(e.Port), 10)
			b = append(b, ",\n        \"probability\": "...)
			b = floats.append(b, e.Probability)
			b = append(b, ",\n        \"chain\": "...)
			b = appendJSONString(b, e.Chain)
			b = append(b, ",\n        \"hairpinMasq\": "...)
			b = strconv.AppendBool(b, e.HairpinMasq)
			b = append(b, ",\n        \"sessionAffinity\": "...)
			b = strconv.AppendBool(b, e.SessionAffinity)
			b = append(b, ",\n        \"share\": "...)
			b = floats.append(b, e.Share)
			if e.Weight != 0 {
				b = append(b, ",\n        \"weight\": "...)
				b = strconv.AppendInt(b, int64(e.Weight), 10)
			}
			b = append(b, "\n      }"...)
		}
		b = append(b, "\n    ]"...)
	}
	j := jsonWriter{b: b, indent: "    "}
	if s.NoEndpoints {
		j.bool("noEndpoints", true)
	}
	if len(s.NodePorts) > 0 {
		j.ints("nodePorts", s.NodePorts)
	}
	if len(s.ExternalIPs) > 0 {
		j.strs("externalIPs", s.ExternalIPs)
	}
	if len(s.LoadBalancerIPs) > 0 {
		j.strs("loadBalancerIPs", s.LoadBalancerIPs)
	}
	if s.LocalPolicy {
		j.bool("localPolicy", true)
	}
	if s.SessionAffinitySeconds != 0 {
		j.int("sessionAffinitySeconds", s.SessionAffinitySeconds)
	}
	if len(s.Raw) > 0 {
		j.strs("raw", s.Raw)
	}
	j.str("backend", string(s.Backend))
	j.int("family", s.Family)
	if s.LocalChain != "" {
		j.str("localChain", s.LocalChain)
	}
	if s.ExternalChain != "" {
		j.str("externalChain", s.ExternalChain)
	}
	if s.FirewallChain != "" {
		j.str("firewallChain", s.FirewallChain)
	}
	return append(j.b, "\n  }"...)
}

// appendJSONFloat formats like encoding/json: shortest representation,
// exponent only for very small or large values.
func appendJSONFloat(b []byte, f float64) []byte {
	abs := f
	if abs < 0 {
		abs = -abs
	}
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		// Rare: let encoding/json decide the exact form.
		out, _ := json.Marshal(f)
		return append(b, out...)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

const hexDigits = "0123456789abcdef"

// jsonPlain marks the bytes a JSON string holds as they are: printable
// ASCII but the quote and the backslash.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString quotes s as writeJSON's encoder does: no HTML escaping
// (SetEscapeHTML(false)), but U+2028 and U+2029 escaped as encoding/json
// always does.
func appendJSONString(b []byte, s string) []byte {
	// Names, addresses and chains need no escaping: find the first byte
	// that does, if any, a table lookup a byte.
	i := 0
	for i < len(s) && jsonPlain[s[i]] {
		i++
	}
	b = append(b, '"')
	if i == len(s) {
		b = append(b, s...)
		return append(b, '"')
	}
	start := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonPlain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
