package main

import (
	"os/exec"
	"strings"
	"testing"
)

// Go runs the init of every package linked into the binary, whatever the
// command: the CRI client speaks its two calls itself so that grpc-go and
// cri-api's generated types (and their descriptor registration) are not
// linked, and the metrics are written in the text format by the exporter
// package so that prometheus/client_golang (whose init builds a default
// registry with Go and process collectors over procfs) and client_model's
// protobuf types (timestamppb and the descriptor registry) are not linked.
// No part of the protobuf module is linked: even protowire brings its error
// package, whose init reads the executable file (internal/detrand). They
// may be used by tests only.
func TestBinaryLinksNoGRPCNorClientGolang(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-tags", "urfave_cli_no_docs", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list -deps gave %d packages", len(deps))
	}
	for _, p := range deps {
		for _, bad := range []string{"google.golang.org/grpc", "k8s.io/cri-api", "google.golang.org/protobuf", "golang.org/x/net/http2",
			"github.com/prometheus/client_golang", "github.com/prometheus/client_model", "github.com/prometheus/procfs",
			"expvar"} {
			if p == bad || strings.HasPrefix(p, bad+"/") {
				t.Errorf("the binary links %s", p)
			}
		}
	}
}
