package cri

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A runtime socket that accepts and never answers: Sandboxes gives up
// when its context ends, with the context's error, and never hangs.
func TestSandboxesSilentSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // read nothing, write nothing
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	sbs, ep, err := Sandboxes(ctx, []string{"unix://" + sock})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "code = DeadlineExceeded") || ep != "unix://"+sock || sbs != nil {
		t.Fatalf("Sandboxes on a silent socket = %v, %q, %v; want DeadlineExceeded", sbs, ep, err)
	}
	if !strings.Contains(err.Error(), sock) {
		t.Errorf("error %q does not name the socket", err)
	}
}

// No socket at any endpoint: ErrNoRuntime, at once.
func TestSandboxesNoRuntime(t *testing.T) {
	dir := t.TempDir()
	_, _, err := Sandboxes(context.Background(), []string{"unix://" + dir + "/a.sock", dir + "/b.sock"})
	if !errors.Is(err, ErrNoRuntime) {
		t.Fatalf("err = %v, want ErrNoRuntime", err)
	}
	if _, _, err := Sandboxes(context.Background(), []string{"tcp://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "unix:///path") {
		t.Errorf("tcp endpoint: %v", err)
	}
}

// startContainerd runs Debian's containerd with its own root, state and
// socket under a temporary directory, stopped when the test ends.
func startContainerd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd not installed (apt-get install containerd)")
	}
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	conf := `version = 2
root = "` + dir + `/root"
state = "` + dir + `/state"
[grpc]
  address = "` + sock + `"
[ttrpc]
  address = "` + sock + `.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "` + dir + `/net.d"
`
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		log.Close()
	})
	// Poll for the CRI service to answer, up to a deadline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _, err := Sandboxes(ctx, []string{"unix://" + sock})
		cancel()
		if err == nil {
			return "unix://" + sock
		}
		select {
		case werr := <-exited:
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd exited (%v):\n%s", werr, tail(string(out)))
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd's CRI did not answer: %v\n%s", err, tail(string(out)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// The real containerd answers the CRI calls crictl makes; a fresh one has
// no sandboxes.
func TestSandboxesContainerd(t *testing.T) {
	ep := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	sbs, got, err := Sandboxes(ctx, []string{"unix:///nonexistent/cri.sock", ep})
	if err != nil || got != ep {
		t.Fatalf("Sandboxes = %v, %q, %v", sbs, got, err)
	}
	if len(sbs) != 0 {
		t.Errorf("a fresh containerd has sandboxes: %+v", sbs)
	}
}
