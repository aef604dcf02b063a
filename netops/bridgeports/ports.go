package bridgeports

import (
	"net/netip"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/pods"
)

// Port is one bridge port (a device enslaved to a Linux bridge) and its
// hairpin state.
type Port struct {
	// Bridge is the name of the bridge the port belongs to.
	Bridge string `json:"bridge"`
	// Name is the port's interface name in the node namespace.
	Name string `json:"name"`
	// Index is the port's ifindex.
	Index int `json:"index"`
	// Hairpin is true when the port reflects frames back out of the port
	// they came in on (IFLA_BRPORT_MODE, brport/hairpin_mode).
	Hairpin bool `json:"hairpin"`
	// State is the STP port state: disabled, listening, learning,
	// forwarding or blocking.
	State string `json:"state"`
	// OperState is the RFC 2863 operational state: up, down, lowerlayerdown, ...
	OperState string `json:"operState"`
	// MAC is the port's hardware address.
	MAC string `json:"mac"`
	// PodIPs are the addresses of the pod behind the port, learnt from the
	// veth peer's namespace or from the bridge's neighbour and FDB tables;
	// empty when they cannot be learnt.
	PodIPs []string `json:"podIPs"`
	// PodIPSource says where PodIPs came from: "netns:<name or path>",
	// "neigh" (bridge ARP/NDP + FDB), or "" when unknown.
	PodIPSource string `json:"podIPSource,omitempty"`

	// Kind is the port's link kind: "veth", "vxlan", "tun" (a tap), ...,
	// "" for a physical NIC. PodPort is true for a pod's port: a veth whose
	// peer is in another network namespace, which is how CNI plugins wire
	// pods. Both are filled when listed with ListOptions.Kinds or PodIPs.
	Kind    string `json:"kind"`
	PodPort bool   `json:"podPort"`
	// Pod is the pod behind the port, from what the node records (see
	// ListOptions.Pods); nil (absent from JSON, as podIPSource is) when it
	// cannot be told for certain.
	Pod *pods.Pod `json:"pod,omitempty"`

	// BridgeIndex is the bridge's ifindex (the port's IFLA_MASTER), which a
	// hairpin write names; not in JSON, where Bridge names the bridge.
	BridgeIndex int `json:"-"`

	peerIndex   int
	peerNetnsID int
	// podNetns is the path of the pod's namespace as the record that
	// named Pod gave it, "" when none (see PortNetns).
	podNetns string
}

// NotPodPort says why p is not a pod's port, "" when it is. Hairpin on an
// uplink (a NIC, vxlan or tap port) reflects the bridge's floods back out
// of it, so bulk changes leave such ports alone.
func NotPodPort(p Port) string {
	if p.PodPort {
		return ""
	}
	what := "a " + p.Kind + " device"
	switch p.Kind {
	case "":
		what = "a physical NIC (an uplink)"
	case "vxlan", "geneve", "vlan", "macvlan", "bond":
		what = "a " + p.Kind + " uplink"
	case "tun":
		what = "a tap device"
	case "veth":
		what = "a veth whose peer is in this namespace"
	}
	return "not a pod's port: " + what
}

// Skipped is a port a bulk change left alone, and why.
type Skipped struct {
	// Name is the port's interface name.
	Name string `json:"name"`
	// Reason says why, e.g. "not a pod's port: a vxlan uplink".
	Reason string `json:"reason"`
}

// SplitPodPorts keeps the pods' ports of ports (listed with
// ListOptions.Kinds) and says why each other one is skipped.
func SplitPodPorts(ports []Port) (pods []Port, skipped []Skipped) {
	skipped = []Skipped{}
	for _, p := range ports {
		if why := NotPodPort(p); why != "" {
			skipped = append(skipped, Skipped{Name: p.Name, Reason: why})
			continue
		}
		pods = append(pods, p)
	}
	return pods, skipped
}

// PortFilter selects ports. Empty fields select everything.
type PortFilter struct {
	// Bridges keeps ports of these bridges only.
	Bridges []string
	// Names keeps these ports only.
	Names []string
	// Hairpin, when not nil, keeps ports whose hairpin state equals it.
	Hairpin *bool
}

// SetResult is the outcome of a bulk hairpin change.
type SetResult struct {
	// Changed lists the ports that were written (or, in a dry run, would be).
	Changed []string `json:"changed"`
	// Unchanged lists the ports already in the wanted state; they were not written.
	Unchanged []string `json:"unchanged"`
	// Failed lists the ports that could not be set, with the reason.
	Failed []Failure `json:"failed"`
	// Skipped lists the ports of the selected bridges that are not pods'
	// ports (uplinks), left alone unless named or --any-port is given.
	Skipped []Skipped `json:"skipped"`
	// DryRun is true when nothing was written.
	DryRun bool `json:"dryRun"`
}

// Failure is one port or name that could not be handled.
type Failure struct {
	// Name is the interface name.
	Name string `json:"name"`
	// Error says why, in one line.
	Error string `json:"error"`

	err error
}

// Err returns the underlying error, for errors.Is.
func (f Failure) Err() error { return f.err }

// NewSetResult returns a SetResult with empty, non-nil slices.
func NewSetResult() *SetResult {
	return &SetResult{Changed: []string{}, Unchanged: []string{}, Failed: []Failure{}, Skipped: []Skipped{}}
}

// Fail records a failure.
func (r *SetResult) Fail(name string, err error) {
	r.Failed = append(r.Failed, Failure{Name: name, Error: err.Error(), err: err})
}

// stpStates names the kernel's BR_STATE_* values.
var stpStates = [...]string{"disabled", "listening", "learning", "forwarding", "blocking"}

func stpStateName(s uint8) string {
	if int(s) < len(stpStates) {
		return stpStates[s]
	}
	return "unknown"
}

// PortArgAddr reads a port argument that names the pod behind a port by
// one of its IP addresses, as the POD-IPS column prints them, rather than
// by the port's interface name.
func PortArgAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// PodArgPrefix starts a port argument that names a pod:
// pod/NAMESPACE/NAME, as kubectl names resources.
const PodArgPrefix = "pod/"

// PortArgPod reads a port argument of the form pod/NAMESPACE/NAME and
// returns "NAMESPACE/NAME".
func PortArgPod(s string) (string, bool) {
	rest, ok := strings.CutPrefix(s, PodArgPrefix)
	if !ok {
		return "", false
	}
	return rest, true
}

// ValidatePortArg accepts an interface name, a pod IP address or
// pod/NAMESPACE/NAME.
func ValidatePortArg(s string) error {
	if _, ok := PortArgAddr(s); ok {
		return nil
	}
	if full, ok := PortArgPod(s); ok {
		ns, name, ok := strings.Cut(full, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return netops.Errorf(netops.ErrInvalid, "%q is not a pod: write pod/NAMESPACE/NAME, e.g. pod/default/web-0", s)
		}
		return nil
	}
	return netops.ValidateIfName(s)
}

// PortArgsNeedPods reports whether an argument names a pod, so that the
// ports must be listed with their pods.
func PortArgsNeedPods(args []string) bool {
	for _, a := range args {
		if _, ok := PortArgPod(a); ok {
			return true
		}
	}
	return false
}

// PortArgsNeedPodIPs reports whether an argument selects by pod IP, so
// that the ports must be listed with their pod IPs.
func PortArgsNeedPodIPs(args []string) bool {
	for _, a := range args {
		if _, ok := PortArgAddr(a); ok {
			return true
		}
	}
	return false
}

// PodsByIP indexes the pods behind ports (listed with ListOptions.Pods)
// by the pod IPs of their ports: the join of an address seen elsewhere (a
// Service endpoint, a conntrack flow's client) to the pod holding it. An
// address of no port, of a port whose pod nothing names, or of two ports
// of different pods has none.
func PodsByIP(ports []Port) map[netip.Addr]*pods.Pod {
	m := map[netip.Addr]*pods.Pod{}
	for i := range ports {
		p := &ports[i]
		for _, s := range p.PodIPs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			a = a.Unmap()
			if old, dup := m[a]; dup {
				if old == nil || p.Pod == nil || old.ContainerID != p.Pod.ContainerID {
					m[a] = nil // two ports claim it: name neither
				}
				continue
			}
			m[a] = p.Pod
		}
	}
	for a, p := range m {
		if p == nil {
			delete(m, a)
		}
	}
	return m
}
