package selftest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
)

// Cancelled while its namespaces are being created, Run still
// removes every one of them and says so in the report.
func TestSelftestCancelledMidBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var created []string
	rep, err := Run(ctx, Options{
		Prefix: "hpstcancel",
		Created: func(name string) {
			created = append(created, name)
			if len(created) == 2 {
				cancel()
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if len(created) < 2 {
		t.Fatalf("created %v", created)
	}
	for _, name := range created {
		if _, err := os.Stat(filepath.Join(netops.NetnsDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", name, err)
		}
	}
	if rep == nil || len(rep.Steps) == 0 {
		t.Fatalf("report %+v", rep)
	}
	last := rep.Steps[len(rep.Steps)-1]
	if last.Name != "clean up" || !last.OK {
		t.Errorf("last step %+v, want a successful clean up", last)
	}
	if rep.Passed {
		t.Error("an interrupted run passed")
	}
	for _, s := range rep.Steps {
		if s.Name == "build namespaces" {
			t.Errorf("a step cut short by the interruption was recorded: %+v", s)
		}
	}
}

func TestSelftestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Prefix: "Bad/Prefix"},
		{Prefix: "this-prefix-is-far-too-long-to-be-a-prefix"},
		{Backend: "ipvs"},
	} {
		_, err := Run(context.Background(), o)
		if !errors.Is(err, netops.ErrInvalid) {
			t.Errorf("Run(%+v) = %v, want netops.ErrInvalid", o, err)
		}
	}
}
