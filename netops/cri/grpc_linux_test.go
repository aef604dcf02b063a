package cri

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// serveGRPC answers gRPC over cleartext HTTP/2 on a unix socket with
// handler, as a runtime does, and returns the endpoint.
func serveGRPC(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: handler, Protocols: &protos}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "unix://" + sock
}

// readRequest checks the headers of a gRPC call made with a deadline and
// decodes its message with cri-api's types.
func readRequest(t *testing.T, r *http.Request, m proto.Message) {
	t.Helper()
	if r.ProtoMajor != 2 || r.Header.Get("Content-Type") != "application/grpc" || r.Header.Get("Te") != "trailers" || r.Header.Get("Grpc-Timeout") == "" {
		t.Errorf("%s: proto %s, headers %v", r.URL.Path, r.Proto, r.Header)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Error(err)
		return
	}
	if len(b) < 5 || b[0] != 0 || int(binary.BigEndian.Uint32(b[1:5])) != len(b)-5 {
		t.Errorf("%s: not one uncompressed length-prefixed message: % x", r.URL.Path, b)
		return
	}
	if err := proto.Unmarshal(b[5:], m); err != nil {
		t.Errorf("%s: %v", r.URL.Path, err)
	}
}

// reply writes m as the one message of the answer, then grpc-status 0.
func reply(w http.ResponseWriter, m proto.Message) {
	b, _ := proto.Marshal(m)
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b)))
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(frame, b...))
	w.Header().Set("Grpc-Status", "0")
}

// fail answers with a status and no message (trailers-only).
func fail(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Grpc-Status", code)
	w.Header().Set("Grpc-Message", msg)
	w.WriteHeader(http.StatusOK)
}

// A runtime that lists two ready sandboxes, one of them gone by the time
// its status is asked: the other is returned with what the runtime said,
// the gone one is left out.
func TestSandboxesRemovedMeanwhile(t *testing.T) {
	info := `{"pid":4242,"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/cni-77"}]}}}`
	ep := serveGRPC(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/runtime.v1.RuntimeService/ListPodSandbox":
			var req runtimeapi.ListPodSandboxRequest
			readRequest(t, r, &req)
			if req.GetFilter().GetState() == nil || req.Filter.State.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("ListPodSandbox filter %v, want ready sandboxes", req.GetFilter())
			}
			reply(w, &runtimeapi.ListPodSandboxResponse{Items: []*runtimeapi.PodSandbox{
				{Id: "gone", Metadata: &runtimeapi.PodSandboxMetadata{Name: "old", Namespace: "default"}},
				{Id: "here", Metadata: &runtimeapi.PodSandboxMetadata{Name: "web-0", Namespace: "shop", Uid: "u-1"}},
			}})
		case "/runtime.v1.RuntimeService/PodSandboxStatus":
			var req runtimeapi.PodSandboxStatusRequest
			readRequest(t, r, &req)
			if !req.Verbose {
				t.Errorf("PodSandboxStatus %v, want verbose", &req)
			}
			if req.PodSandboxId != "here" {
				fail(w, "5", "an error occurred when try to find sandbox "+req.PodSandboxId+": not found")
				return
			}
			reply(w, &runtimeapi.PodSandboxStatusResponse{
				Status: &runtimeapi.PodSandboxStatus{Id: "here", Network: &runtimeapi.PodSandboxNetworkStatus{Ip: "10.244.0.77"}},
				Info:   map[string]string{"info": info},
			})
		default:
			t.Errorf("unexpected call %s", r.URL.Path)
			fail(w, "12", "unknown method")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	sbs, got, err := Sandboxes(ctx, []string{ep})
	if err != nil || got != ep {
		t.Fatalf("Sandboxes = %v, %q, %v", sbs, got, err)
	}
	if len(sbs) != 1 || sbs[0].ID != "here" || sbs[0].Name != "web-0" || sbs[0].Namespace != "shop" || sbs[0].UID != "u-1" ||
		!slices.Equal(sbs[0].IPs, []string{"10.244.0.77"}) || sbs[0].Netns != "/var/run/netns/cni-77" {
		t.Errorf("Sandboxes = %+v", sbs)
	}
}

// A runtime's refusal reaches the caller in grpc-go's words, with the
// runtime's own (percent-encoded) message; so does an answer that is not
// gRPC.
func TestSandboxesRuntimeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"status in trailers", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
			w.WriteHeader(http.StatusOK)
			w.Header().Set("Grpc-Status", "7")
			w.Header().Set("Grpc-Message", "no access for uid 1000%3A see %25s")
		}, "rpc error: code = PermissionDenied desc = no access for uid 1000: see %s"},
		{"trailers only", func(w http.ResponseWriter, r *http.Request) {
			fail(w, "12", "unknown service runtime.v1.RuntimeService")
		}, "rpc error: code = Unimplemented desc = unknown service runtime.v1.RuntimeService"},
		{"not gRPC", func(w http.ResponseWriter, r *http.Request) {
			http.NotFound(w, r)
		}, "rpc error: code = Unimplemented desc = unexpected HTTP status code received from server: 404 (Not Found)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := serveGRPC(t, tc.handler)
			sbs, _, err := Sandboxes(context.Background(), []string{ep})
			if err == nil || sbs != nil || err.Error() != "CRI "+ep+": "+tc.want {
				t.Errorf("Sandboxes = %v, %v; want %q", sbs, err, tc.want)
			}
		})
	}
}

// A socket nobody listens on: Unavailable, naming the socket.
func TestSandboxesRefusedSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dead.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	_, _, err = Sandboxes(context.Background(), []string{"unix://" + sock})
	if err == nil || !strings.Contains(err.Error(), "code = Unavailable") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Sandboxes on a dead socket: %v", err)
	}
}
