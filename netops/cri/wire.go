package cri

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The two CRI calls this package makes, encoded and decoded with the
// protobuf wire format's varints, which are encoding/binary's. Field
// numbers are those of k8s.io/cri-api's pkg/apis/runtime/v1/api.proto; only
// the fields used are read, the rest are skipped as the protobuf rules skip
// unknown fields. The generated cri-api types would link gRPC and the
// protobuf registry, and register their descriptors at the start of every
// command; even protowire alone links the protobuf module's error package,
// whose initialisation reads the executable file at every start of every
// command (internal/detrand), for the two messages a pod lookup exchanges.

// Wire types (protobuf encoding, "Message Structure").
const (
	wireVarint     = 0
	wireFixed64    = 1
	wireBytes      = 2
	wireStartGroup = 3
	wireEndGroup   = 4
	wireFixed32    = 5
)

// appendTag appends a field's key: its number and wire type.
func appendTag(b []byte, num, typ int) []byte {
	return binary.AppendUvarint(b, uint64(num)<<3|uint64(typ))
}

// appendBytes appends a length-delimited value.
func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// podSandbox is what is read of a runtime.v1.PodSandbox.
type podSandbox struct {
	id                   string // 1
	name, uid, namespace string // metadata (2): 1, 2, 3
}

// sandboxStatus is what is read of a runtime.v1.PodSandboxStatusResponse.
type sandboxStatus struct {
	ip       string   // status (1) .network (5) .ip (1)
	extraIPs []string // status.network.additional_ips (2), each PodIP.ip (1)
	info     string   // info (2), the entry under the key "info"
}

// listPodSandboxRequest encodes ListPodSandboxRequest{filter:
// {state: {state: SANDBOX_READY}}}. SANDBOX_READY is 0, proto3's default,
// so PodSandboxStateValue is present but empty.
func listPodSandboxRequest() []byte {
	state := appendTag(nil, 2, wireBytes) // PodSandboxFilter.state
	state = appendBytes(state, nil)
	b := appendTag(nil, 1, wireBytes) // ListPodSandboxRequest.filter
	return appendBytes(b, state)
}

// podSandboxStatusRequest encodes PodSandboxStatusRequest{pod_sandbox_id:
// id (1), verbose (2)}.
func podSandboxStatusRequest(id string, verbose bool) []byte {
	var b []byte
	if id != "" {
		b = appendTag(b, 1, wireBytes)
		b = appendBytes(b, []byte(id))
	}
	if verbose {
		b = appendTag(b, 2, wireVarint)
		b = binary.AppendUvarint(b, 1) // true
	}
	return b
}

// decodeListPodSandboxResponse reads ListPodSandboxResponse.items (1).
func decodeListPodSandboxResponse(b []byte) ([]podSandbox, error) {
	var items []podSandbox
	err := fields(b, func(num int, v []byte) error {
		if num != 1 {
			return nil
		}
		var it podSandbox
		err := fields(v, func(num int, v []byte) error {
			switch num {
			case 1:
				return str(&it.id, v)
			case 2: // PodSandboxMetadata
				return fields(v, func(num int, v []byte) error {
					switch num {
					case 1:
						return str(&it.name, v)
					case 2:
						return str(&it.uid, v)
					case 3:
						return str(&it.namespace, v)
					}
					return nil
				})
			}
			return nil
		})
		items = append(items, it)
		return err
	})
	return items, err
}

// decodePodSandboxStatusResponse reads status.network (1.5) and the
// verbose info map (2).
func decodePodSandboxStatusResponse(b []byte) (sandboxStatus, error) {
	var st sandboxStatus
	err := fields(b, func(num int, v []byte) error {
		switch num {
		case 1: // PodSandboxStatus
			return fields(v, func(num int, v []byte) error {
				if num != 5 {
					return nil
				}
				return fields(v, func(num int, v []byte) error { // PodSandboxNetworkStatus
					switch num {
					case 1:
						return str(&st.ip, v)
					case 2: // PodIP
						var ip string
						err := fields(v, func(num int, v []byte) error {
							if num == 1 {
								return str(&ip, v)
							}
							return nil
						})
						st.extraIPs = append(st.extraIPs, ip)
						return err
					}
					return nil
				})
			})
		case 2: // map<string, string> entry: key 1, value 2
			var key, val string
			err := fields(v, func(num int, v []byte) error {
				switch num {
				case 1:
					return str(&key, v)
				case 2:
					return str(&val, v)
				}
				return nil
			})
			if err == nil && key == "info" {
				st.info = val
			}
			return err
		}
		return nil
	})
	return st, err
}

// fields calls fn with the number and value of each length-delimited
// field of the message b (strings, messages, map entries: all this package
// reads), and skips every other field, groups included. A field seen twice
// is given twice: the last string wins and messages merge, as in protobuf.
func fields(b []byte, fn func(int, []byte) error) error {
	for len(b) > 0 {
		num, typ, val, rest, err := field(b, 0)
		if err != nil {
			return err
		}
		switch typ {
		case wireEndGroup:
			return fmt.Errorf("field %d ends a group that was not started", num)
		case wireBytes:
			if err := fn(num, val); err != nil {
				return err
			}
		}
		b = rest
	}
	return nil
}

// maxGroupDepth bounds the nesting of groups skipped: CRI sends no groups,
// and an answer nesting them deeper is refused, not followed (protobuf
// itself follows 10,000 levels).
const maxGroupDepth = 100

// field reads the field that starts b: its number, its wire type, its
// value when length-delimited, and what follows it. A group is skipped
// whole, up to its end; an end of group is returned for the caller to
// match.
func field(b []byte, depth int) (num, typ int, val, rest []byte, err error) {
	key, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, nil, nil, errMalformed
	}
	b = b[n:]
	if key>>3 == 0 || key>>3 > 1<<29-1 {
		return 0, 0, nil, nil, fmt.Errorf("invalid field number %d", key>>3)
	}
	num, typ = int(key>>3), int(key&7)
	switch typ {
	case wireVarint:
		if _, n = binary.Uvarint(b); n <= 0 {
			return 0, 0, nil, nil, errMalformed
		}
		return num, typ, nil, b[n:], nil
	case wireFixed64, wireFixed32:
		size := 8
		if typ == wireFixed32 {
			size = 4
		}
		if len(b) < size {
			return 0, 0, nil, nil, errMalformed
		}
		return num, typ, nil, b[size:], nil
	case wireBytes:
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return 0, 0, nil, nil, errMalformed
		}
		return num, typ, b[n : n+int(l)], b[n+int(l):], nil
	case wireStartGroup:
		if depth >= maxGroupDepth {
			return 0, 0, nil, nil, fmt.Errorf("groups nested over %d deep", maxGroupDepth)
		}
		for {
			gnum, gtyp, _, grest, err := field(b, depth+1)
			if err != nil {
				return 0, 0, nil, nil, err
			}
			b = grest
			if gtyp == wireEndGroup {
				if gnum != num {
					return 0, 0, nil, nil, fmt.Errorf("group %d ends as group %d", num, gnum)
				}
				return num, typ, nil, b, nil
			}
		}
	case wireEndGroup:
		return num, typ, nil, b, nil
	}
	return 0, 0, nil, nil, fmt.Errorf("field %d has wire type %d, which protobuf does not define", num, typ)
}

var errMalformed = errors.New("malformed protobuf message: truncated, or a varint over 64 bits")

var errUTF8 = errors.New("string field contains invalid UTF-8")

// str sets a proto3 string, which must be UTF-8.
func str(dst *string, v []byte) error {
	if !utf8.Valid(v) {
		return errUTF8
	}
	*dst = string(v)
	return nil
}
