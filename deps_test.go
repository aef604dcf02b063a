package main

import (
	"os/exec"
	"strings"
	"testing"
)

// Go runs the init of every package linked into the binary, whatever the
// command: the CRI client speaks its two calls itself so that grpc-go and
// cri-api's generated types (and their descriptor registration) are not
// linked. They may be used by tests only.
func TestBinaryLinksNoGRPC(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-tags", "urfave_cli_no_docs", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list -deps gave %d packages", len(deps))
	}
	for _, p := range deps {
		for _, bad := range []string{"google.golang.org/grpc", "k8s.io/cri-api", "google.golang.org/protobuf/types/known/anypb", "golang.org/x/net/http2"} {
			if p == bad || strings.HasPrefix(p, bad+"/") {
				t.Errorf("the binary links %s", p)
			}
		}
	}
}
