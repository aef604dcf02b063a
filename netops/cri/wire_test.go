package cri

import (
	"bytes"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The requests are the bytes cri-api's own types marshal to.
func TestRequestsMatchCRIAPI(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want proto.Message
	}{
		{"ListPodSandbox ready", listPodSandboxRequest(), &runtimeapi.ListPodSandboxRequest{
			Filter: &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}},
		}},
		{"PodSandboxStatus verbose", podSandboxStatusRequest("4f1c0e9d2a", true), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "4f1c0e9d2a", Verbose: true}},
		{"PodSandboxStatus", podSandboxStatusRequest("4f1c0e9d2a", false), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "4f1c0e9d2a"}},
		{"PodSandboxStatus empty", podSandboxStatusRequest("", false), &runtimeapi.PodSandboxStatusRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tc.got, want) {
				t.Errorf("encoded % x, cri-api marshals % x", tc.got, want)
			}
		})
	}
}

// A ListPodSandboxResponse marshalled by cri-api, every field set: the
// fields used are read, the others skipped.
func TestDecodeListPodSandboxResponse(t *testing.T) {
	in := &runtimeapi.ListPodSandboxResponse{Items: []*runtimeapi.PodSandbox{
		{
			Id:             "a1b2c3",
			Metadata:       &runtimeapi.PodSandboxMetadata{Name: "web-7d9f6c-x2kq", Uid: "5b0c1e7e-0000-4000-8000-000000000001", Namespace: "default", Attempt: 3},
			State:          runtimeapi.PodSandboxState_SANDBOX_NOTREADY,
			CreatedAt:      1765000000000000000,
			Labels:         map[string]string{"app": "web", "io.kubernetes.pod.name": "other"},
			Annotations:    map[string]string{"name": "not this one"},
			RuntimeHandler: "runc",
		},
		{Id: "d4e5f6"}, // no metadata
		{Id: "070809", Metadata: &runtimeapi.PodSandboxMetadata{Name: "db-0", Namespace: "shop"}},
	}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeListPodSandboxResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	var want []podSandbox
	for _, it := range in.Items {
		want = append(want, podSandbox{id: it.Id, name: it.GetMetadata().GetName(), uid: it.GetMetadata().GetUid(), namespace: it.GetMetadata().GetNamespace()})
	}
	if !slices.Equal(got, want) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	if got, err := decodeListPodSandboxResponse(nil); err != nil || len(got) != 0 {
		t.Errorf("empty response: %+v, %v", got, err)
	}
}

// A verbose PodSandboxStatusResponse marshalled by cri-api: the network's
// IPs and the "info" entry among others.
func TestDecodePodSandboxStatusResponse(t *testing.T) {
	info := `{"pid":4242,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1234"}]}}}`
	in := &runtimeapi.PodSandboxStatusResponse{
		Status: &runtimeapi.PodSandboxStatus{
			Id:        "a1b2c3",
			Metadata:  &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default"},
			State:     runtimeapi.PodSandboxState_SANDBOX_READY,
			CreatedAt: 1765000000000000000,
			Network: &runtimeapi.PodSandboxNetworkStatus{
				Ip:            "10.244.0.12",
				AdditionalIps: []*runtimeapi.PodIP{{Ip: "fd00:10:244::c"}, {Ip: "10.245.0.12"}},
			},
			Linux:  &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD}}},
			Labels: map[string]string{"info": "a label, not the info"},
		},
		Info:               map[string]string{"a": "x", "info": info, "z": "y"},
		ContainersStatuses: []*runtimeapi.ContainerStatus{{Id: "c1", Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}},
		Timestamp:          1765000000000000001,
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodePodSandboxStatusResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := sandboxStatus{ip: "10.244.0.12", extraIPs: []string{"fd00:10:244::c", "10.245.0.12"}, info: info}
	if got.ip != want.ip || !slices.Equal(got.extraIPs, want.extraIPs) || got.info != want.info {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	sb := sandbox(podSandbox{id: "a1b2c3"}, got)
	if sb.Netns != "/var/run/netns/cni-1234" || !slices.Equal(sb.IPs, []string{"10.244.0.12", "fd00:10:244::c", "10.245.0.12"}) {
		t.Errorf("sandbox %+v", sb)
	}

	// Not verbose, no network: nothing.
	b, _ = proto.Marshal(&runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: "a1b2c3"}})
	if got, err := decodePodSandboxStatusResponse(b); err != nil || got.ip != "" || got.extraIPs != nil || got.info != "" {
		t.Errorf("bare status: %+v, %v", got, err)
	}
}

// Fields of every wire type this package does not read are skipped, as
// proto.Unmarshal skips unknown fields.
func TestDecodeSkipsUnknownFields(t *testing.T) {
	in := &runtimeapi.ListPodSandboxResponse{Items: []*runtimeapi.PodSandbox{{Id: "a1b2c3", Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "shop"}}}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var unknown []byte
	unknown = protowire.AppendTag(unknown, 90, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 1<<40)
	unknown = protowire.AppendTag(unknown, 91, protowire.Fixed32Type)
	unknown = protowire.AppendFixed32(unknown, 7)
	unknown = protowire.AppendTag(unknown, 92, protowire.Fixed64Type)
	unknown = protowire.AppendFixed64(unknown, 8)
	// A group holding a string and a nested group.
	unknown = protowire.AppendTag(unknown, 93, protowire.StartGroupType)
	unknown = protowire.AppendTag(unknown, 1, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "in a group")
	unknown = protowire.AppendTag(unknown, 2, protowire.StartGroupType)
	unknown = protowire.AppendTag(unknown, 2, protowire.EndGroupType)
	unknown = protowire.AppendTag(unknown, 93, protowire.EndGroupType)
	b = append(unknown, b...)
	var m runtimeapi.ListPodSandboxResponse
	if err := proto.Unmarshal(b, &m); err != nil || len(m.Items) != 1 {
		t.Fatalf("proto.Unmarshal: %v, %d items", err, len(m.Items))
	}
	got, err := decodeListPodSandboxResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []podSandbox{{id: "a1b2c3", name: "web", namespace: "shop"}}
	if !slices.Equal(got, want) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
}

// Groups are skipped to maxGroupDepth levels; deeper ones, which protobuf
// would follow, are refused.
func TestDecodeGroupDepth(t *testing.T) {
	nested := func(depth int) []byte {
		var b []byte
		for range depth {
			b = protowire.AppendTag(b, 9, protowire.StartGroupType)
		}
		for range depth {
			b = protowire.AppendTag(b, 9, protowire.EndGroupType)
		}
		return b
	}
	for _, depth := range []int{1, maxGroupDepth} {
		var m runtimeapi.ListPodSandboxResponse
		if err := proto.Unmarshal(nested(depth), &m); err != nil {
			t.Fatalf("depth %d: proto.Unmarshal: %v", depth, err)
		}
		if _, err := decodeListPodSandboxResponse(nested(depth)); err != nil {
			t.Errorf("depth %d: %v", depth, err)
		}
	}
	if _, err := decodeListPodSandboxResponse(nested(maxGroupDepth + 1)); err == nil {
		t.Errorf("groups %d deep decoded", maxGroupDepth+1)
	}
}

// What proto.Unmarshal refuses is refused: truncated data, a bad tag,
// a string that is not UTF-8.
func TestDecodeMalformed(t *testing.T) {
	good, _ := proto.Marshal(&runtimeapi.ListPodSandboxResponse{Items: []*runtimeapi.PodSandbox{{Id: "a1b2c3", Metadata: &runtimeapi.PodSandboxMetadata{Name: "web"}}}})
	notUTF8 := protowire.AppendTag(nil, 1, protowire.BytesType)
	notUTF8 = protowire.AppendBytes(notUTF8, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "web\xff"))
	for name, b := range map[string][]byte{
		"truncated":           good[:len(good)-1],
		"field 0":             {0x02, 0x00},
		"end group":           {0x0c},
		"not UTF-8":           notUTF8,
		"long length":         {0x0a, 0x7f, 0x00},
		"varint over 64 bits": append([]byte{0x08}, bytes.Repeat([]byte{0xff}, 10)...),
		"short fixed64":       {0x09, 1, 2, 3},
		"unended group":       {0x0b, 0x08, 0x01},
		"group ends as other": {0x0b, 0x14},
		"wire type 6":         {0x0e},
	} {
		var m runtimeapi.ListPodSandboxResponse
		if proto.Unmarshal(b, &m) == nil {
			t.Fatalf("%s: proto.Unmarshal accepts % x", name, b)
		}
		if got, err := decodeListPodSandboxResponse(b); err == nil {
			t.Errorf("%s: decoded % x as %+v", name, b, got)
		}
		if got, err := decodePodSandboxStatusResponse(b); err == nil && name != "not UTF-8" {
			t.Errorf("%s: decoded % x as status %+v", name, b, got)
		}
	}
}
