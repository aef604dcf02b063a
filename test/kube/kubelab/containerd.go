package kubelab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Containerd is a containerd of the node, as a node runs its container
// runtime: started in the node namespace (so a container with host
// networking shares the node's network), with its own root, state, socket
// and runtime directories under the lab's directory, and no CRI plugin
// (ctr drives it). Lab.Close stops every task, the shims and containerd.
type Containerd struct {
	// Dir holds its root, state and sockets.
	Dir string
	// Socket is its gRPC address, for ctr -a.
	Socket string
	// Namespace is the containerd namespace the lab's containers use.
	Namespace string

	proc *proc
}

// StartContainerd starts the node's containerd (Debian's containerd and
// runc) and waits until it answers.
func (l *Lab) StartContainerd(ctx context.Context) (*Containerd, error) {
	for _, bin := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found: apt-get install containerd runc (scripts/test-deps.sh kube)", bin)
		}
	}
	dir := filepath.Join(l.Dir, "containerd")
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), Namespace: "kubelab"}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	// nsenter --net, not `ip netns exec`: the latter remounts /sys, which
	// hides the cgroup mounts runc needs.
	p, err := l.spawn("containerd", l.Node, "containerd", "--config", cfgPath)
	if err != nil {
		return nil, err
	}
	c.proc = p
	l.mu.Lock()
	l.containerd = c
	l.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.Ctr(ctx, "version"); err == nil {
			return c, nil
		}
		if err := p.exited(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("containerd did not answer on %s within 30 s: %s", c.Socket, tail(p.log, 5))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RunArgs are the options every `ctr run` needs: runc's state and the IO
// FIFOs under Dir too, not under /run/containerd where another
// containerd's would be.
func (c *Containerd) RunArgs() []string {
	return []string{"--runc-root", filepath.Join(c.Dir, "runc"), "--fifo-dir", filepath.Join(c.Dir, "fifo")}
}

// Command is ctr with this containerd's socket and namespace.
func (c *Containerd) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ctr", append([]string{"-a", c.Socket, "-n", c.Namespace}, args...)...)
}

// Ctr runs ctr and returns its output.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	cmd := c.Command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// TaskPID returns the host PID of a running container's task.
func (c *Containerd) TaskPID(ctx context.Context, id string) (int, error) {
	out, err := c.Ctr(ctx, "task", "ls")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no task %s:\n%s", id, out)
}

// stop kills every task and removes every container, so that the shims
// (which outlive containerd by design) exit, then stops containerd and
// kills any shim still serving its socket.
func (c *Containerd) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := c.Ctr(ctx, "containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = c.Ctr(ctx, "task", "kill", "-s", "SIGKILL", id)
			_, _ = c.Ctr(ctx, "task", "delete", "-f", id)
			_, _ = c.Ctr(ctx, "containers", "delete", id)
		}
	}
	_ = syscall.Kill(-c.proc.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.proc.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-c.proc.cmd.Process.Pid, syscall.SIGKILL)
		<-c.proc.done
	}
	for _, pid := range shimsOf(c.Socket) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Mounts a killed shim left (a container's rootfs) would keep the
	// directory from being removed.
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		var mounts []string
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], c.Dir+"/") {
				mounts = append(mounts, f[4])
			}
		}
		for i := len(mounts) - 1; i >= 0; i-- {
			_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
		}
	}
}

// shimsOf returns the PIDs of the runc shims serving containerd at socket.
func shimsOf(socket string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		for i := range args[:len(args)-1] {
			if args[i] == "-address" && args[i+1] == socket {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
