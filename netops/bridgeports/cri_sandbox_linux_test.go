package bridgeports

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/cri"
	"github.com/hairpinctl/hairpinctl/netops/internal/clienttest"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const pauseRef = "hairpinctl.test/pause:1"

// pauseImage builds a static program that waits for SIGTERM and packs it
// as a docker-archive image, the smallest sandbox image containerd runs.
func pauseImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"os\"\n\t\"os/signal\"\n\t\"syscall\"\n)\n\nfunc main() {\n\tc := make(chan os.Signal, 1)\n\tsignal.Notify(c, syscall.SIGTERM, syscall.SIGINT)\n\t<-c\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module pause\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", "pause", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "pause"))
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	_ = lw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg})
	_, _ = lw.Write(bin)
	_ = lw.Close()
	sum := sha256.Sum256(layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/pause"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(sum[:])}},
	})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{pauseRef}, "Layers": []string{"layer.tar"}}})
	archive := filepath.Join(dir, "pause.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	aw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{{"layer.tar", layer.Bytes()}, {"config.json", config}, {"manifest.json", manifest}} {
		_ = aw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg})
		_, _ = aw.Write(e.data)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return archive
}

// removeCRILabCache removes the libcni cache entries of network (and the
// loopback attachment containerd makes beside each), or with network ""
// those of every crilab network whose sandbox's namespace is gone: a run
// that was killed before its cleanup. A live run's entries stay.
func removeCRILabCache(t *testing.T, network string) {
	t.Helper()
	dir := filepath.Join(pods.DefaultCacheDir, "results")
	names, _ := filepath.Glob(filepath.Join(dir, "crilab-*"))
	for _, path := range names {
		var entry struct {
			ContainerID string `json:"containerId"`
			NetworkName string `json:"networkName"`
			Netns       string `json:"netns"`
		}
		b, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(b, &entry) != nil || entry.ContainerID == "" {
			continue
		}
		if network != "" && entry.NetworkName != network {
			continue
		}
		if network == "" {
			if _, err := os.Stat(entry.Netns); entry.Netns == "" || err == nil {
				continue
			}
		}
		for _, p := range []string{path, filepath.Join(dir, "cni-loopback-"+entry.ContainerID+"-lo")} {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				t.Errorf("remove %s: %v", p, err)
			}
		}
	}
}

// A pod sandbox made by the real containerd through CRI (RunPodSandbox):
// containerd runs the bridge plugin in the lab's node namespace through
// libcni, which writes its cache in /var/lib/cni. The port is named from
// that cache, and, with the cache out of the way, from the runtime over
// CRI; both with the identity given to RunPodSandbox and the ID it
// returned.
func TestPodsOfContainerdSandbox(t *testing.T) {
	for _, b := range []string{"containerd", "ctr", "runc", "nsenter"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed (apt-get install containerd runc)", b)
		}
	}
	labtest.RequireCNIPlugins(t)
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none"})
	// containerd 1.6's CRI plugin has no setting for libcni's cache
	// directory: its entries go to the host's /var/lib/cni. The network's
	// name is this run's, its entries are removed when the test ends, and
	// those a killed run left behind when the next one starts.
	network := "crilab-" + strings.TrimPrefix(l.Node, "hp-node-")
	removeCRILabCache(t, "")
	t.Cleanup(func() { removeCRILabCache(t, network) })
	confDir, ipam := t.TempDir(), t.TempDir()
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       network,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": l.Bridge,
			"ipam": map[string]any{"type": "host-local", "dataDir": ipam,
				"ranges": []any{[]any{map[string]any{"subnet": "10.244.0.0/24", "rangeStart": "10.244.0.200", "rangeEnd": "10.244.0.220"}}}},
		}},
	})
	if err := os.WriteFile(filepath.Join(confDir, "10-crilab.conflist"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	image := pauseImage(t)
	ctd, err := lab.StartContainerd(lab.ContainerdOptions{Netns: l.NodePath, SandboxImage: pauseRef, CNIConfDir: confDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctd.Stop() })
	if _, err := ctd.Ctr("images", "import", image); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ctd.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	meta := &runtimeapi.PodSandboxMetadata{Name: "web-cri-0", Namespace: "shop", Uid: "5b0c1e7e-0000-4000-8000-00000000c41d"}
	run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: meta, Hostname: "web", LogDirectory: t.TempDir(), Linux: &runtimeapi.LinuxPodSandboxConfig{},
	}})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, ctd.LogTail())
	}
	id := run.PodSandboxId
	// Stop (CNI DEL: veth, address and cache entry go) and remove (the
	// netns goes) before containerd is killed.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Errorf("StopPodSandbox: %v", err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Errorf("RemovePodSandbox: %v", err)
		}
	})
	want := pods.Pod{Namespace: meta.Namespace, Name: meta.Name, UID: meta.Uid, ContainerID: id}
	sandboxPort := func(ports []Port) Port {
		t.Helper()
		var other []Port
		for _, p := range ports {
			if p.Name != "veth1" && p.Name != "veth2" {
				other = append(other, p)
			}
		}
		if len(other) != 1 {
			t.Fatalf("want one port besides the lab's pods, got %+v", other)
		}
		return other[0]
	}
	c := clienttest.Open(t, l)

	// From the cache containerd's libcni wrote.
	ports, err := List(c, ListOptions{Pods: &PodOptions{CacheDir: pods.DefaultCacheDir}})
	if err != nil {
		t.Fatal(err)
	}
	p := sandboxPort(ports)
	got := p.Pod
	if got == nil || got.Namespace != want.Namespace || got.Name != want.Name || got.UID != want.UID || got.ContainerID != id || got.Source != pods.SourceCache || got.Network != network || got.Interface != "eth0" {
		t.Errorf("from the cache: %+v, want %+v", got, want)
	}

	// From the runtime, with no cache.
	ports, err = List(c, ListOptions{Pods: &PodOptions{CacheDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if p := sandboxPort(ports); p.Pod != nil {
		t.Fatalf("named without a cache: %+v", p.Pod)
	}
	sbs, ep, err := cri.Sandboxes(ctx, []string{ctd.Endpoint})
	if err != nil || ep != ctd.Endpoint {
		t.Fatalf("Sandboxes: %v", err)
	}
	NamePods(c, ports, pods.FromSandboxes(sbs))
	want.Source = pods.SourceCRI
	if got := sandboxPort(ports).Pod; got == nil || *got != want {
		t.Errorf("from CRI: %+v, want %+v (sandboxes %+v)", got, want, sbs)
	}
	for _, p := range ports {
		if (p.Name == "veth1" || p.Name == "veth2") && p.Pod != nil {
			t.Errorf("%s named %+v", p.Name, p.Pod)
		}
	}
}
