package commands

import (
	"bufio"
	"encoding/json"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
)

// writeServicesJSON writes svcs exactly as writeJSON would (a two-space
// indented array), one service at a time. encoding/json builds the whole
// document, then indents it in a second pass: for 10,000 services of five
// endpoints that is 84 MB and longer than reading the rules.
// TestServicesJSONMatchesEncodingJSON keeps the two identical, field for
// field.
func writeServicesJSON(w io.Writer, svcs []kubeproxy.Service) error {
	if len(svcs) == 0 {
		_, err := io.WriteString(w, "[]\n")
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString("[\n")
	var b []byte
	for i := range svcs {
		b = append(b[:0], "  "...)
		b = appendServiceJSON(b, &svcs[i])
		if i < len(svcs)-1 {
			b = append(b, ',')
		}
		b = append(b, '\n')
		bw.Write(b)
	}
	bw.WriteString("]\n")
	return bw.Flush()
}

// jsonObject appends an object's `"key": value` lines at one indent, as
// json.MarshalIndent does; its fields follow the struct's JSON tags.
type jsonObject struct {
	b      []byte
	indent string
	fields int
}

func (o *jsonObject) key(k string) {
	if o.fields > 0 {
		o.b = append(o.b, ',')
	}
	o.fields++
	o.b = append(o.b, '\n')
	o.b = append(o.b, o.indent...)
	// Keys are the JSON tags' names: plain ASCII, nothing to escape.
	o.b = append(o.b, '"')
	o.b = append(o.b, k...)
	o.b = append(o.b, '"', ':', ' ')
}

func (o *jsonObject) str(k, v string) { o.key(k); o.b = appendJSONString(o.b, v) }
func (o *jsonObject) int(k string, v int) {
	o.key(k)
	o.b = strconv.AppendInt(o.b, int64(v), 10)
}
func (o *jsonObject) bool(k string, v bool)     { o.key(k); o.b = strconv.AppendBool(o.b, v) }
func (o *jsonObject) float(k string, v float64) { o.key(k); o.b = appendJSONFloat(o.b, v) }
func (o *jsonObject) strs(k string, v []string) { jsonArray(o, k, v, appendJSONString) }
func (o *jsonObject) ints(k string, v []int) {
	jsonArray(o, k, v, func(b []byte, n int) []byte { return strconv.AppendInt(b, int64(n), 10) })
}

// end closes the object; the caller wrote its opening brace.
func (o *jsonObject) end() []byte {
	if o.fields == 0 {
		return append(o.b, '}')
	}
	o.b = append(o.b, '\n')
	o.b = append(o.b, o.indent[2:]...)
	return append(o.b, '}')
}

// jsonArray writes v one element a line, indented one level deeper; nil is
// null and an empty array is [], as encoding/json writes them.
func jsonArray[T any](o *jsonObject, k string, v []T, elem func([]byte, T) []byte) {
	o.key(k)
	switch {
	case v == nil:
		o.b = append(o.b, "null"...)
		return
	case len(v) == 0:
		o.b = append(o.b, "[]"...)
		return
	}
	o.b = append(o.b, '[')
	for i, x := range v {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b = append(o.b, '\n')
		o.b = append(o.b, o.indent...)
		o.b = append(o.b, "  "...)
		o.b = elem(o.b, x)
	}
	o.b = append(o.b, '\n')
	o.b = append(o.b, o.indent...)
	o.b = append(o.b, ']')
}

// appendServiceJSON appends s as an element of the array (its fields
// indented by four spaces) with the field order and the omitempty rules of
// kubeproxy.Service's JSON tags.
func appendServiceJSON(b []byte, s *kubeproxy.Service) []byte {
	o := jsonObject{b: append(b, '{'), indent: "    "}
	o.str("namespace", s.Namespace)
	o.str("name", s.Name)
	o.str("portName", s.PortName)
	o.str("protocol", s.Protocol)
	o.str("clusterIP", s.ClusterIP)
	o.int("port", s.Port)
	o.str("chain", s.Chain)
	jsonArray(&o, "endpoints", s.Endpoints, appendEndpointJSON)
	if s.NoEndpoints {
		o.bool("noEndpoints", true)
	}
	if len(s.NodePorts) > 0 {
		o.ints("nodePorts", s.NodePorts)
	}
	if len(s.ExternalIPs) > 0 {
		o.strs("externalIPs", s.ExternalIPs)
	}
	if len(s.LoadBalancerIPs) > 0 {
		o.strs("loadBalancerIPs", s.LoadBalancerIPs)
	}
	if s.LocalPolicy {
		o.bool("localPolicy", true)
	}
	if s.SessionAffinitySeconds != 0 {
		o.int("sessionAffinitySeconds", s.SessionAffinitySeconds)
	}
	if len(s.Raw) > 0 {
		o.strs("raw", s.Raw)
	}
	o.str("backend", string(s.Backend))
	o.int("family", s.Family)
	if s.LocalChain != "" {
		o.str("localChain", s.LocalChain)
	}
	if s.ExternalChain != "" {
		o.str("externalChain", s.ExternalChain)
	}
	if s.FirewallChain != "" {
		o.str("firewallChain", s.FirewallChain)
	}
	return o.end()
}

// appendEndpointJSON appends e as an element of a service's endpoints.
func appendEndpointJSON(b []byte, e kubeproxy.Endpoint) []byte {
	o := jsonObject{b: append(b, '{'), indent: "        "}
	o.str("ip", e.IP)
	o.int("port", e.Port)
	o.float("probability", e.Probability)
	o.str("chain", e.Chain)
	o.bool("hairpinMasq", e.HairpinMasq)
	o.bool("sessionAffinity", e.SessionAffinity)
	o.float("share", e.Share)
	if e.Weight != 0 {
		o.int("weight", e.Weight)
	}
	if e.Local != nil {
		o.bool("local", *e.Local)
	}
	if e.Pod != nil {
		o.key("pod")
		p := jsonObject{b: append(o.b, '{'), indent: o.indent + "  "}
		p.str("namespace", e.Pod.Namespace)
		p.str("name", e.Pod.Name)
		p.str("uid", e.Pod.UID)
		p.str("containerID", e.Pod.ContainerID)
		p.str("network", e.Pod.Network)
		p.str("interface", e.Pod.Interface)
		p.str("source", e.Pod.Source)
		o.b = p.end()
	}
	return o.end()
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
