package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMakeInstallDestdir installs into a scratch DESTDIR, checks every file
// lands where its tool looks, then uninstalls and checks nothing is left.
func TestMakeInstallDestdir(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	dest := t.TempDir()
	mk := func(args ...string) {
		t.Helper()
		cmd := exec.Command("make", append([]string{"--no-print-directory", "DESTDIR=" + dest}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %v: %v\n%s", args, err, out)
		}
	}
	mk("install", "PREFIX=/opt/hp")
	files := func() []string {
		var out []string
		_ = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				out = append(out, strings.TrimPrefix(p, dest))
			}
			return nil
		})
		return out
	}
	got := files()
	units, _ := filepath.Glob("systemd/*.service")
	timers, _ := filepath.Glob("systemd/*.timer")
	want := []string{
		"/opt/hp/bin/hairpinctl",
		"/opt/hp/share/man/man8/hairpinctl.8",
		"/opt/hp/share/bash-completion/completions/hairpinctl",
		"/opt/hp/share/zsh/site-functions/_hairpinctl",
		"/opt/hp/share/fish/vendor_completions.d/hairpinctl.fish",
	}
	for _, u := range append(units, timers...) {
		want = append(want, "/opt/hp/lib/systemd/system/"+filepath.Base(u))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("installed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	unit, err := os.ReadFile(filepath.Join(dest, "/opt/hp/lib/systemd/system/hairpinctl-watch.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/opt/hp/bin/hairpinctl ") || strings.Contains(string(unit), "/usr/local/bin") {
		t.Errorf("watch unit not pointed at the installed binary:\n%s", unit)
	}
	out, err := exec.Command(filepath.Join(dest, "/opt/hp/bin/hairpinctl"), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "hairpinctl ") {
		t.Errorf("installed binary: %v %q", err, out)
	}
	mk("uninstall", "PREFIX=/opt/hp")
	if left := files(); len(left) != 0 {
		t.Errorf("uninstall left %v", left)
	}
}
