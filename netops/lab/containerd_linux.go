package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Containerd is Debian's containerd with a root, state and socket of its
// own under a temporary directory, for tests of what a runtime reports
// over CRI. Stop ends it; its sandboxes' namespaces (under /run/netns)
// and libcni cache entries are its own to remove, through CRI.
type Containerd struct {
	// Endpoint is its CRI endpoint, unix:///.../containerd.sock.
	Endpoint string
	// Socket is the socket's path; Dir holds its root, state and log.
	Socket, Dir string

	cmd    *exec.Cmd
	exited chan error
}

// ContainerdOptions shapes a containerd.
type ContainerdOptions struct {
	// Netns is the network namespace (a path) it runs in, and so where
	// the CNI plugins it runs put the pods' host ends; "" for the caller's.
	Netns string
	// SandboxImage is the pause image its CRI plugin starts sandboxes with.
	SandboxImage string
	// CNIConfDir is where its CRI plugin reads the CNI network.
	CNIConfDir string
}

// StartContainerd starts containerd and waits for its socket to exist.
// Per the machine's known quirks it is started with nsenter --net rather
// than ip netns exec (which remounts /sys and hides the cgroup v1
// mounts), and with restrict_oom_score_adj (no CAP_SYS_RESOURCE here).
func StartContainerd(o ContainerdOptions) (*Containerd, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, fmt.Errorf("lab: containerd not installed (apt-get install containerd runc): %w", err)
	}
	dir, err := os.MkdirTemp("", "hairpinctl-lab-containerd-")
	if err != nil {
		return nil, err
	}
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), exited: make(chan error, 1)}
	c.Endpoint = "unix://" + c.Socket
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc", o.SandboxImage, CNIPluginDir, o.CNIConfDir)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	args := []string{bin, "--config", filepath.Join(dir, "config.toml")}
	if o.Netns != "" {
		args = append([]string{"nsenter", "--net=" + o.Netns}, args...)
	}
	c.cmd = exec.Command(args[0], args[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := c.cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("lab: start containerd: %w", err)
	}
	go func() { c.exited <- c.cmd.Wait(); log.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if fi, err := os.Stat(c.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return c, nil
		}
		select {
		case err := <-c.exited:
			c.exited <- err
			return nil, fmt.Errorf("lab: containerd exited (%v): %s", err, c.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, errors.New("lab: containerd made no socket in 30s: " + c.LogTail())
		}
	}
}

// Ctr runs ctr against this containerd in the k8s.io namespace, where
// the CRI plugin looks for images.
func (c *Containerd) Ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", c.Socket, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// LogTail is the end of containerd's log, for failure messages.
func (c *Containerd) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// Stop kills containerd, waits for it, and removes its directory (its
// shims' mounts included, once they are gone).
func (c *Containerd) Stop() error {
	_ = c.cmd.Process.Kill()
	err := <-c.exited
	c.exited <- err
	return os.RemoveAll(c.Dir)
}
