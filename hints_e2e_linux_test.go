package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/vishvananda/netlink"
)

// A "(see: hairpinctl ...)" hint is a command to paste: it looks where the
// failing command looked, so it carries the --netns in use, also when that
// came from HAIRPINCTL_NETNS.
func TestE2EBadInputHintsCarryNetns(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Endpoints: []int{1}, Restore: "iptables-nft-restore"})
	h := l.Handle()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth9"}, PeerName: "veth9p"}); err != nil {
		t.Fatal(err)
	}
	ns := l.Node
	see := "(see: hairpinctl ports --netns " + ns + ")"
	tests := []badInput{
		{"unknown interface", nil, []string{"enable", "nope0", "--netns", ns}, 2, "nope0: no such interface in netns " + ns + " " + see},
		{"not a bridge port", nil, []string{"enable", "veth9", "--netns", ns}, 2, "veth9 is not attached to a bridge " + see},
		{"unknown pod IP", nil, []string{"disable", "10.244.9.9", "--netns", ns}, 2, "10.244.9.9: no bridge port has a pod with this IP in netns " + ns + " " + see},
		{"unknown port listed", nil, []string{"ports", "nope0", "--netns", ns}, 2, see},
		{"port of a bridge not selected", nil, []string{"ports", "veth1", "--bridge", "br9", "--netns", ns}, 2, "veth1 is a port of cni0, which was not selected " + see},
		{"no such service", nil, []string{"services", "10.96.9.9", "--netns", ns}, 2, "(see: hairpinctl services --netns " + ns + ")"},
	}
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br9"}}); err != nil {
		t.Fatal(err)
	}
	checkBadInput(t, tests)

	t.Run("netns from the environment", func(t *testing.T) {
		r := runCmd(t, nil, []string{"HAIRPINCTL_NETNS=" + ns}, "enable", "nope0")
		if r.code != 2 {
			t.Errorf("exit %d, want 2 (%+v)", r.code, r)
		}
		oneLineErr(t, r, "nope0: no such interface in netns "+ns+" "+see)
	})
	t.Run("no netns, no flag", func(t *testing.T) {
		r := run(t, "enable", "nope0xyz")
		oneLineErr(t, r, "nope0xyz: no such interface in netns host (see: hairpinctl ports)")
	})
}

// enable --all where there is no bridge at all says so, rather than that
// the bridges have no ports.
func TestE2EEnableAllNoBridge(t *testing.T) {
	ns := scratchNetns(t)
	r := run(t, "enable", "--all", "--netns", ns)
	if r.code != 0 {
		t.Errorf("exit %d, want 0 (%+v)", r.code, r)
	}
	oneLineErr(t, r, "enable: no bridge in netns "+ns+": nothing to do")

	if out, err := exec.Command("ip", "-n", ns, "link", "add", "br0", "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	r = run(t, "disable", "--all", "--netns", ns)
	if r.code != 0 {
		t.Errorf("exit %d, want 0 (%+v)", r.code, r)
	}
	oneLineErr(t, r, "disable: no bridge in netns "+ns+" has a port: nothing to do")
}

// Run under `ip netns exec X`, doctor names X (its /run/netns bind mount
// is the process's own namespace), and the kube-proxy restart fix names
// this host's node rather than a literal NODE.
func TestE2EDoctorUnderIPNetnsExec(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Endpoints: []int{1}, Restore: "iptables-nft-restore", Hairpin: true})
	// Break the masquerade plumbing: POSTROUTING no longer jumps to KUBE-POSTROUTING.
	if out, err := l.Exec("", "iptables-nft", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"); err != nil {
		t.Fatalf("delete the POSTROUTING jump: %v: %s", err, out)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host = strings.ToLower(host) // as kubelet registers it
	const restart = "kubectl -n kube-system delete pod -l k8s-app=kube-proxy --field-selector spec.nodeName="

	cmd := exec.Command("ip", "netns", "exec", l.Node, bin, "doctor", "-o", "json")
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	out, err := cmd.Output()
	var d doctorJSON
	if jerr := json.Unmarshal(out, &d); jerr != nil {
		t.Fatalf("ip netns exec doctor: %v, %v\n%s", err, jerr, out)
	}
	if d.Summary.Netns != l.Node {
		t.Errorf("summary netns %q, want %q", d.Summary.Netns, l.Node)
	}
	st, _, fix := d.check(t, "masquerade")
	if st != "FAIL" || !strings.Contains(fix, restart+host+" (this host's name; kubelet's --hostname-override may differ)") {
		t.Errorf("masquerade %s, fix %q: want the node named %s", st, fix, host)
	}

	// With --netns the namespace may be another node's (a kind node, a
	// lab): its name is not known, and the fix says what to put there.
	d, _ = doctorRun(t, "--netns", l.Node)
	if _, _, fix := d.check(t, "masquerade"); !strings.Contains(fix, restart+"NODE (NODE: the name of the Node whose namespace this is)") {
		t.Errorf("--netns: fix %q", fix)
	}
}
