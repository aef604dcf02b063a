package cri

import (
	"errors"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The two CRI calls this package makes, encoded and decoded with protowire
// alone. Field numbers are those of k8s.io/cri-api's
// pkg/apis/runtime/v1/api.proto; only the fields used are read, the rest
// are skipped as the protobuf rules skip unknown fields. The generated
// cri-api types would link gRPC and the protobuf registry, and register
// their descriptors at the start of every command.

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
	state := protowire.AppendTag(nil, 2, protowire.BytesType) // PodSandboxFilter.state
	state = protowire.AppendBytes(state, nil)
	b := protowire.AppendTag(nil, 1, protowire.BytesType) // ListPodSandboxRequest.filter
	return protowire.AppendBytes(b, state)
}

// podSandboxStatusRequest encodes PodSandboxStatusRequest{pod_sandbox_id:
// id (1), verbose (2)}.
func podSandboxStatusRequest(id string, verbose bool) []byte {
	var b []byte
	if id != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, id)
	}
	if verbose {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(true))
	}
	return b
}

// decodeListPodSandboxResponse reads ListPodSandboxResponse.items (1).
func decodeListPodSandboxResponse(b []byte) ([]podSandbox, error) {
	var items []podSandbox
	err := fields(b, func(num protowire.Number, v []byte) error {
		if num != 1 {
			return nil
		}
		var it podSandbox
		err := fields(v, func(num protowire.Number, v []byte) error {
			switch num {
			case 1:
				return str(&it.id, v)
			case 2: // PodSandboxMetadata
				return fields(v, func(num protowire.Number, v []byte) error {
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
	err := fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1: // PodSandboxStatus
			return fields(v, func(num protowire.Number, v []byte) error {
				if num != 5 {
					return nil
				}
				return fields(v, func(num protowire.Number, v []byte) error { // PodSandboxNetworkStatus
					switch num {
					case 1:
						return str(&st.ip, v)
					case 2: // PodIP
						var ip string
						err := fields(v, func(num protowire.Number, v []byte) error {
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
			err := fields(v, func(num protowire.Number, v []byte) error {
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
// reads), and skips every other field. A field seen twice is given twice:
// the last string wins and messages merge, as in protobuf.
func fields(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}

var errUTF8 = errors.New("string field contains invalid UTF-8")

// str sets a proto3 string, which must be UTF-8.
func str(dst *string, v []byte) error {
	if !utf8.Valid(v) {
		return errUTF8
	}
	*dst = string(v)
	return nil
}
