package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// nulls returns the path of every null in the JSON values of out (one
// document or JSON Lines). docs/json.md promises [] for every empty list
// and leaves out the fields that do not apply, so no null is ever right.
func nulls(t *testing.T, out string) []string {
	t.Helper()
	var found []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case nil:
			found = append(found, path)
		case map[string]any:
			for k, e := range v {
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for n := 0; ; n++ {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			if n == 0 {
				t.Fatalf("no JSON at all")
			}
			return found
		}
		if err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		walk(fmt.Sprintf("$%d", n), v)
	}
}

// Every command's -o json, on a node with nothing on it (no bridge, no
// kube-proxy rules) and on a busy one: no null anywhere, "[]" for every
// empty list as docs/json.md promises.
func TestE2EJSONHasNoNull(t *testing.T) {
	busy := newLab(t, lab.Options{Pods: 2})
	if _, err := busy.ConnectService(busy.Pod(2), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	labtest.HoldService(t, busy, busy.Pod(2)) // a flow for conntrack's dump
	empty := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	br, err := empty.Handle().LinkByName(empty.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := empty.Handle().LinkDel(br); err != nil {
		t.Fatal(err)
	}

	for _, l := range []*lab.Lab{empty, busy} {
		name := "busy"
		if l == empty {
			name = "no bridge"
		}
		t.Run(name, func(t *testing.T) {
			for _, args := range [][]string{
				{"ports"},
				{"ports", "--hairpin", "on"},
				{"enable", "--all", "--dry-run"},
				{"enable", "--all"},
				{"enable", "--all"}, // every port unchanged
				{"disable", "--all"},
				{"services"},
				{"services", "--raw"},
				{"conntrack", l.ServiceIP.String(), "--no-follow"},
				{"doctor"},
				{"version"},
			} {
				t.Run(strings.Join(args, " "), func(t *testing.T) {
					r := run(t, append(args, "-o", "json", "--netns", l.Node)...)
					if args[0] == "version" {
						r = run(t, "version", "-o", "json")
					}
					switch {
					case r.code == 0:
					case r.code == 4 && args[0] == "doctor": // FAILs on the empty node
					case r.code == 1 && args[0] == "services" && l == empty:
					default:
						t.Fatalf("exit %d: %+v", r.code, r)
					}
					if l == empty && (args[0] == "conntrack" || args[0] == "services") {
						// No flows: no lines. No kube-proxy rules: an error.
						if r.stdout != "" {
							t.Errorf("printed %q", r.stdout)
						}
						return
					}
					if n := nulls(t, r.stdout); len(n) > 0 {
						t.Errorf("null at %v in:\n%s", n, r.stdout)
					}
				})
			}
			t.Run("watch", func(t *testing.T) {
				ready := filepath.Join(t.TempDir(), "ready")
				p := startBin(t, nil, nil, bin, "watch", "--all", "-o", "json", "--netns", l.Node, "--ready-file", ready)
				waitFile(t, p, ready)
				if code := p.stop(t, syscall.SIGTERM); code != 0 {
					t.Fatalf("exit %d: %s", code, p.stderr.String())
				}
				if n := nulls(t, p.stdout.String()); len(n) > 0 {
					t.Errorf("null at %v in:\n%s", n, p.stdout.String())
				}
			})
		})
	}
	t.Run("selftest", func(t *testing.T) {
		r := run(t, "selftest", "--prefix", selftestPrefix(t), "-o", "json")
		if r.code != 0 {
			t.Fatalf("exit %d: %+v", r.code, r)
		}
		if n := nulls(t, r.stdout); len(n) > 0 {
			t.Errorf("null at %v in:\n%s", n, r.stdout)
		}
	})
}
