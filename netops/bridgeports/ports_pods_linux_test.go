package bridgeports

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/clienttest"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/hairpinctl/hairpinctl/netops/pods"
)

// podLab is a lab node with pods attached through libcni, which writes
// its result cache as containerd and CRI-O do, next to the lab's
// hand-made pods (which no cache names).
func podLab(t *testing.T) (*lab.Lab, *lab.CNI) {
	t.Helper()
	labtest.RequireCNIPlugins(t)
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none"})
	cni, err := l.NewCNI(lab.CNIConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return l, cni
}

func cniPod(t *testing.T, l *lab.Lab, cni *lab.CNI, ns, name string) *lab.CNIPod {
	t.Helper()
	p, err := l.NewCNIPod(ns, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cni.Attach(p, "eth0"); err != nil {
		t.Fatal(err)
	}
	return p
}

func listWithPods(t *testing.T, c *netops.Client, cacheDir string) (map[string]Port, []string) {
	t.Helper()
	var warns []string
	ports, err := List(c, ListOptions{Pods: &PodOptions{CacheDir: cacheDir, Warn: func(m string) { warns = append(warns, m) }}})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Port{}
	for _, p := range ports {
		byName[p.Name] = p
	}
	return byName, warns
}

// wantPod checks that port carries exactly the identity CNI ADD was given.
func wantPod(t *testing.T, ports map[string]Port, a *lab.Attachment, p *lab.CNIPod) {
	t.Helper()
	got, ok := ports[a.HostVeth]
	if !ok {
		t.Fatalf("port %s (of %s/%s) not listed", a.HostVeth, p.Namespace, p.Name)
	}
	want := pods.Pod{Namespace: p.Namespace, Name: p.Name, UID: p.UID, ContainerID: p.ContainerID, Network: a.Network, Interface: a.IfName, Source: pods.SourceCache}
	if got.Pod == nil || *got.Pod != want {
		t.Errorf("port %s: pod %+v, want %+v", a.HostVeth, got.Pod, want)
	}
}

func TestListPortsNamesCNIPods(t *testing.T) {
	l, cni := podLab(t)
	web := cniPod(t, l, cni, "default", "web-7d9f6c-x2kq")
	db := cniPod(t, l, cni, "shop", "db-0")
	c := clienttest.Open(t, l)
	ports, warns := listWithPods(t, c, cni.CacheDir)
	if len(warns) > 0 {
		t.Errorf("warnings: %q", warns)
	}
	wantPod(t, ports, web.Attachments[0], web)
	wantPod(t, ports, db.Attachments[0], db)
	// The hand-made pods were never through CNI: unknown, not guessed.
	for _, hp := range l.Pods {
		if p := ports[hp.HostVeth]; p.Pod != nil {
			t.Errorf("%s has pod %+v; no cache entry names it", hp.HostVeth, p.Pod)
		}
	}
	// The port's pod IPs, learnt from its namespace, are IPAM's.
	if got := ports[web.Attachments[0].HostVeth].PodIPs; len(got) != 1 || got[0] != web.Attachments[0].IPs[0].String() {
		t.Errorf("web pod IPs %v, want %v", got, web.Attachments[0].IPs)
	}
	// Selecting by pod.
	sel, fails := Select(c, mapValues(ports), []string{"pod/shop/db-0", "pod/shop/nope"})
	if len(sel) != 1 || sel[0].Name != db.Attachments[0].HostVeth {
		t.Errorf("pod/shop/db-0 selects %+v", sel)
	}
	if len(fails) != 1 || !strings.Contains(fails[0].Error, "pod/shop/nope") {
		t.Errorf("pod/shop/nope: %+v", fails)
	}
}

func mapValues(m map[string]Port) []Port {
	out := make([]Port, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	return out
}

// A pod with two interfaces, on two networks and bridges: each port names
// the pod and the interface behind it.
func TestListPortsPodTwoInterfaces(t *testing.T) {
	l, cni := podLab(t)
	cni2, err := l.NewCNI(lab.CNIConfig{Network: "second", Bridge: "cni1", Subnet: "10.245.0.0/24", CacheDir: cni.CacheDir})
	if err != nil {
		t.Fatal(err)
	}
	p := cniPod(t, l, cni, "default", "multi-0")
	if _, err := cni2.Attach(p, "net1"); err != nil {
		t.Fatal(err)
	}
	c := clienttest.Open(t, l)
	ports, _ := listWithPods(t, c, cni.CacheDir)
	wantPod(t, ports, p.Attachments[0], p)
	wantPod(t, ports, p.Attachments[1], p)
	if b := ports[p.Attachments[1].HostVeth].Bridge; b != "cni1" {
		t.Errorf("net1's port on %q, want cni1", b)
	}
	sel, fails := Select(c, mapValues(ports), []string{"pod/default/multi-0"})
	if len(sel) != 2 || len(fails) != 0 {
		t.Errorf("pod/default/multi-0 selects %d ports (%+v), want both", len(sel), fails)
	}
}

// A pod deleted without CNI DEL leaves its cache entry; the next pod gets
// its IP. The old entry must not name the new pod's port, whether or not
// the new pod has an entry of its own.
func TestListPortsStaleCacheEntry(t *testing.T) {
	l, _ := podLab(t)
	// One address only, so the new pod must get the old one's.
	cni, err := l.NewCNI(lab.CNIConfig{Network: "one", Subnet: "10.244.0.0/24", RangeStart: "10.244.0.150", RangeEnd: "10.244.0.150"})
	if err != nil {
		t.Fatal(err)
	}
	old := cniPod(t, l, cni, "default", "web-old")
	oldIP := old.Attachments[0].IPs[0]
	stale, err := os.ReadFile(cni.CacheFile(old, "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	// The sandbox goes: CNI DEL releases the address (and libcni drops the
	// entry), the namespace is removed; then the entry libcni had written
	// is put back, as a runtime that lost the DEL leaves it.
	if err := cni.Detach(old, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteNetns(old); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cni.CacheFile(old, "eth0"), stale, 0o600); err != nil {
		t.Fatal(err)
	}
	young := cniPod(t, l, cni, "default", "web-new")
	if !young.Attachments[0].IPs[0].Equal(oldIP) {
		t.Fatalf("new pod got %v, old had %v: the test needs the address reused", young.Attachments[0].IPs, oldIP)
	}
	c := clienttest.Open(t, l)
	ports, _ := listWithPods(t, c, cni.CacheDir)
	wantPod(t, ports, young.Attachments[0], young)

	// Without the new pod's own entry, only the stale one holds the IP:
	// its namespace is gone, so the port is unknown.
	if err := os.Remove(cni.CacheFile(young, "eth0")); err != nil {
		t.Fatal(err)
	}
	ports, _ = listWithPods(t, c, cni.CacheDir)
	if p := ports[young.Attachments[0].HostVeth]; p.Pod != nil {
		t.Errorf("with only the stale entry, %s is named %+v; want unknown", p.Name, p.Pod)
	}
}

// A cache file that cannot be parsed (a runtime killed mid-write) is
// skipped with a warning and the others still name their pods; a cache
// that cannot be read at all leaves every pod unknown, with a warning,
// and the listing still works.
func TestListPortsBadCache(t *testing.T) {
	l, cni := podLab(t)
	web := cniPod(t, l, cni, "default", "web-0")
	db := cniPod(t, l, cni, "default", "db-0")
	data, err := os.ReadFile(cni.CacheFile(db, "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cni.CacheFile(db, "eth0"), data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	c := clienttest.Open(t, l)
	ports, warns := listWithPods(t, c, cni.CacheDir)
	wantPod(t, ports, web.Attachments[0], web)
	if p := ports[db.Attachments[0].HostVeth]; p.Pod != nil {
		t.Errorf("truncated entry names %s %+v", p.Name, p.Pod)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], filepath.Base(cni.CacheFile(db, "eth0"))) {
		t.Errorf("warnings %q, want one naming the truncated file", warns)
	}

	// results/ is a file, not a directory: nothing can be read.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "results"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ports, warns = listWithPods(t, c, bad)
	for _, p := range ports {
		if p.Pod != nil {
			t.Errorf("%s named %+v from an unreadable cache", p.Name, p.Pod)
		}
	}
	if len(ports) != 4 || len(warns) != 1 || !strings.Contains(warns[0], "pod names unknown") {
		t.Errorf("%d ports, warnings %q", len(ports), warns)
	}
	// No cache at all (a node without libcni): no warning.
	if _, warns = listWithPods(t, c, filepath.Join(bad, "none")); len(warns) != 0 {
		t.Errorf("missing cache warns %q", warns)
	}
}

// A result without the host interface (plugins need not report it) names
// the port by the pod's IP, once the entry's netns is found to be the
// namespace of the port's veth peer.
func TestListPortsPodByIPAndNetns(t *testing.T) {
	l, cni := podLab(t)
	web := cniPod(t, l, cni, "default", "web-0")
	file := cni.CacheFile(web, "eth0")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var entry map[string]any
	if err := json.Unmarshal(data, &entry); err != nil {
		t.Fatal(err)
	}
	res := entry["result"].(map[string]any)
	delete(res, "interfaces")
	for _, ip := range res["ips"].([]any) {
		delete(ip.(map[string]any), "interface")
	}
	if data, err = json.Marshal(entry); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c := clienttest.Open(t, l)
	ports, _ := listWithPods(t, c, cni.CacheDir)
	wantPod(t, ports, web.Attachments[0], web)

	// The same entry pointing at another pod's namespace names nothing.
	entry["netns"] = "/run/netns/" + l.Pods[0].Name
	if data, err = json.Marshal(entry); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ports, _ = listWithPods(t, c, cni.CacheDir)
	for _, p := range ports {
		if p.Pod != nil {
			t.Errorf("%s named %+v by an entry whose netns is another pod's", p.Name, p.Pod)
		}
	}
}

// Sandboxes the runtime reports name the ports the cache does not, by the
// pod's IP checked against the netns the runtime gives; a sandbox whose
// netns is not the port's peer's names nothing, whatever its IP.
func TestNamePodsFromSandboxes(t *testing.T) {
	l, cni := podLab(t)
	web := cniPod(t, l, cni, "default", "web-0")
	db := cniPod(t, l, cni, "default", "db-0")
	c := clienttest.Open(t, l)
	empty := t.TempDir()
	ports, err := List(c, ListOptions{Pods: &PodOptions{CacheDir: empty}})
	if err != nil {
		t.Fatal(err)
	}
	sbs := []pods.Sandbox{
		{ID: "sb-web", Namespace: "default", Name: "web-0", UID: "u-web", IPs: []string{web.Attachments[0].IPs[0].String()}, Netns: web.NetnsPath},
		// db's IP, but the netns of a hand-made pod: a wrong answer
		// must not be believed.
		{ID: "sb-db", Namespace: "default", Name: "db-0", UID: "u-db", IPs: []string{db.Attachments[0].IPs[0].String()}, Netns: "/run/netns/" + l.Pods[0].Name},
	}
	NamePods(c, ports, pods.FromSandboxes(sbs))
	byName := map[string]Port{}
	for _, p := range ports {
		byName[p.Name] = p
	}
	want := pods.Pod{Namespace: "default", Name: "web-0", UID: "u-web", ContainerID: "sb-web", Source: pods.SourceCRI}
	if got := byName[web.Attachments[0].HostVeth].Pod; got == nil || *got != want {
		t.Errorf("web: %+v, want %+v", got, want)
	}
	for _, p := range ports {
		if p.Name != web.Attachments[0].HostVeth && p.Pod != nil {
			t.Errorf("%s named %+v", p.Name, p.Pod)
		}
	}
}

// Runtimes with older conflists get results, and cache entries, in older
// spec versions: 0.3.1 and 0.4.0 results (ips with a version, interfaces
// by index) name their pods as 1.0.0 ones do.
func TestListPortsOlderCNIVersions(t *testing.T) {
	l, _ := podLab(t)
	for i, v := range []string{"0.3.1", "0.4.0"} {
		t.Run(v, func(t *testing.T) {
			cni, err := l.NewCNI(lab.CNIConfig{Network: "v" + strings.ReplaceAll(v, ".", ""), CNIVersion: v,
				Subnet: "10.244.0.0/24", RangeStart: fmt.Sprintf("10.244.0.%d", 230+10*i), RangeEnd: fmt.Sprintf("10.244.0.%d", 239+10*i)})
			if err != nil {
				t.Fatal(err)
			}
			p := cniPod(t, l, cni, "legacy", "app-"+v)
			data, err := os.ReadFile(cni.CacheFile(p, "eth0"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), `"cniVersion":"`+v+`"`) {
				t.Fatalf("libcni cached a result of another version:\n%s", data)
			}
			ports, warns := listWithPods(t, clienttest.Open(t, l), cni.CacheDir)
			if len(warns) > 0 {
				t.Errorf("warnings %q", warns)
			}
			wantPod(t, ports, p.Attachments[0], p)
		})
	}
}
