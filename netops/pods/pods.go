// Package pods learns which Kubernetes pod sits behind a bridge port from
// what the node already records: the result cache that libcni writes for
// every network attachment a container runtime (containerd, CRI-O) makes.
// It never guesses: a port whose pod cannot be told for certain has none.
package pods

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
)

// DefaultCacheDir is libcni's cache directory, where runtimes keep one
// result file per attachment under results/.
var DefaultCacheDir = libcni.CacheDir

// Source values for Pod.Source.
const (
	// SourceCache: the libcni result cache.
	SourceCache = "cache"
	// SourceCRI: the container runtime, over CRI.
	SourceCRI = "cri"
)

// Pod is the pod behind a bridge port.
type Pod struct {
	// Namespace and Name are the Kubernetes pod's (the runtime's
	// K8S_POD_NAMESPACE and K8S_POD_NAME CNI args); both are empty for a
	// container the runtime did not start for Kubernetes.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// UID is the pod's UID (K8S_POD_UID), empty when not recorded.
	UID string `json:"uid"`
	// ContainerID is the pod sandbox's ID, as the runtime passed it to CNI.
	ContainerID string `json:"containerID"`
	// Network is the CNI network's name and Interface the pod-side
	// interface (CNI_IFNAME) of the attachment behind the port: a pod with
	// two interfaces has one attachment, and one port, for each.
	Network   string `json:"network"`
	Interface string `json:"interface"`
	// Source says where the name came from: "cache" or "cri".
	Source string `json:"source"`
}

// FullName is "namespace/name", "" when the name is unknown.
func (p *Pod) FullName() string {
	if p == nil || p.Name == "" {
		return ""
	}
	return p.Namespace + "/" + p.Name
}

// entry is one attachment of the cache.
type entry struct {
	pod   Pod
	netns string
	// hosts are the result's host-side interfaces: the bridge plugin
	// reports the node end of the pod's veth (and the bridge itself).
	hosts []iface
	ips   []netip.Addr
}

type iface struct{ name, mac string }

// Cache is what the libcni result cache says, indexed for Lookup.
type Cache struct {
	// Dir is the results directory read.
	Dir string
	// Skipped lists the files that could not be read or are not libcni
	// cache entries, with the reason; their pods stay unknown.
	Skipped []string

	entries []*entry
	byHost  map[string][]*entry
	byIP    map[netip.Addr][]*entry
}

// cachedInfo holds the fields of libcni's cache entry (libcni's own
// cachedInfo, which it does not export) that name a pod. libcni's exported
// reader, CNIConfig.GetCachedAttachments, leaves out the result (the IPs and
// interfaces), and reading it back per attachment with
// GetNetworkListCachedResult would read and parse every file twice.
//
// Only what is used is read: the network configuration (base64 in
// "config") and the rest of the result are skipped, and the args are kept
// as raw pairs until one is known to be wanted. A node lists its ports
// with the pods' names every time: scanCachedInfo fills this struct in
// one pass, and encoding/json, through the tags, takes what it declines.
type cachedInfo struct {
	Kind        string        `json:"kind"`
	ContainerID string        `json:"containerId"`
	IfName      string        `json:"ifName"`
	NetworkName string        `json:"networkName"`
	NetNS       string        `json:"netns"`
	CniArgs     []cniArg      `json:"cniArgs"`
	Result      *cachedResult `json:"result"`
}

// cniArg is one [key, value] pair of the runtime's CNI_ARGS, decoded
// only when its key names the pod.
type cniArg [2]rawJSON

// rawJSON is a JSON value left undecoded. Unlike json.RawMessage it is
// not copied: it points into the file's bytes, which the parser holds
// until it has taken what it needs.
type rawJSON []byte

// UnmarshalJSON keeps data without copying it.
func (r *rawJSON) UnmarshalJSON(data []byte) error {
	*r = data
	return nil
}

// jsonString decodes a JSON string; one without escapes is its bytes
// between the quotes, with no decoder started for it.
func jsonString(r rawJSON) (string, error) {
	if len(r) >= 2 && r[0] == '"' && r[len(r)-1] == '"' && bytes.IndexByte(r, '\\') < 0 && utf8.Valid(r) {
		return string(r[1 : len(r)-1]), nil
	}
	var s string
	err := json.Unmarshal(r, &s)
	return s, err
}

// cachedResult is the part of a CNI result that places the pod: the
// result of spec 0.3.0 to 1.1.0 alike (their interfaces and ips have the
// same shape); older ones are converted (oldResult). Interfaces are the
// CNI project's own type; an IP is kept as the address string the spec
// writes ("10.244.0.12/24"), parsed without the allocations of
// types100.IPConfig's decoder.
type cachedResult struct {
	CNIVersion string               `json:"cniVersion"`
	Interfaces []types100.Interface `json:"interfaces"`
	IPs        []cachedIP           `json:"ips"`
}

type cachedIP struct {
	Interface *int   `json:"interface"`
	Address   string `json:"address"`
}

// LoadCache reads the result cache under dir (libcni's CacheDir; the
// files are in dir/results). A missing directory is an empty cache: no
// runtime has attached a pod through libcni here. A directory that cannot
// be read is an error; a file that cannot be read or parsed is listed in
// Skipped and the others are still used.
func LoadCache(dir string) (*Cache, error) {
	c := &Cache{Dir: filepath.Join(dir, "results"), Skipped: []string{}, byHost: map[string][]*entry{}, byIP: map[netip.Addr][]*entry{}}
	f, err := os.Open(c.Dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return c, nil
		}
		return c, fmt.Errorf("read CNI result cache %s: %w", c.Dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return c, fmt.Errorf("read CNI result cache %s: %w", c.Dir, err)
	}
	// A node has an entry per pod interface: a thousand files take longer
	// to read and decode than the kernel takes to list the ports, so they
	// are shared among the CPUs.
	type parsed struct {
		e    *entry
		skip string
	}
	out := make([]parsed, len(names))
	workers := min(runtime.GOMAXPROCS(0), 1+len(names)/64)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := reader{dir: f}
			var ps parser
			for {
				i := int(next.Add(1) - 1)
				if i >= len(names) {
					return
				}
				path := filepath.Join(c.Dir, names[i])
				data, err := r.read(names[i])
				if err != nil {
					out[i].skip = fmt.Sprintf("%s: %v", path, err)
					continue
				}
				if data == nil {
					continue // a directory
				}
				e, err := ps.parse(data)
				if err != nil {
					out[i].skip = fmt.Sprintf("%s: %v", path, err)
					continue
				}
				out[i].e = e
			}
		}()
	}
	wg.Wait()
	for _, p := range out {
		switch {
		case p.e != nil:
			c.add(p.e)
		case p.skip != "":
			c.Skipped = append(c.Skipped, p.skip)
		}
	}
	return c, nil
}

// parseEntry reads one cache file with a parser of its own; LoadCache
// keeps one parser per reading goroutine.
func parseEntry(data []byte) (*entry, error) {
	var ps parser
	return ps.parse(data)
}

// parser reads the entries of one worker: what scanCachedInfo fills is
// reused from one entry to the next, as nothing of it outlives parse but
// the strings, and strings many entries share (the network, the kind,
// the bridge's name and address) are made once.
type parser struct {
	ci     cachedInfo
	res    cachedResult
	intern map[string]string
}

// parse reads one cache file: libcni's envelope and the result's
// interfaces and IPs, in one pass or else with encoding/json; a result of
// a spec before 0.3.0 (ip4 and ip6, no interfaces) is converted with the
// CNI library.
func (ps *parser) parse(data []byte) (*entry, error) {
	ps.ci = cachedInfo{CniArgs: ps.ci.CniArgs[:0]}
	ps.res = cachedResult{Interfaces: ps.res.Interfaces[:0], IPs: ps.res.IPs[:0]}
	if ps.intern == nil {
		ps.intern = map[string]string{}
	}
	ci := &ps.ci
	if !scanCachedInfo(data, ci, &ps.res, ps.intern) {
		ci = &cachedInfo{}
		if err := json.Unmarshal(data, ci); err != nil {
			return nil, fmt.Errorf("not a CNI cache entry: %w", err)
		}
	}
	if ci.Kind != libcni.CNICacheV1 {
		// Files from before libcni 0.8 hold a bare result, without the
		// container or its args: nothing in them names a pod.
		return nil, fmt.Errorf("not a %s cache entry (kind %q)", libcni.CNICacheV1, ci.Kind)
	}
	if ci.ContainerID == "" || ci.IfName == "" {
		return nil, errors.New("cache entry without a container ID or interface")
	}
	e := &entry{
		pod: Pod{
			ContainerID: ci.ContainerID,
			Network:     ci.NetworkName,
			Interface:   ci.IfName,
			Source:      SourceCache,
		},
		netns: ci.NetNS,
	}
	if err := e.podArgs(ci.CniArgs); err != nil {
		return nil, err
	}
	res := ci.Result
	if res == nil {
		return e, nil
	}
	if res.CNIVersion == "0.1.0" || res.CNIVersion == "0.2.0" {
		var err error
		if res, err = oldResult(data); err != nil {
			return nil, err
		}
	}
	e.addResult(res)
	return e, nil
}

// podArgs takes the pod's namespace, name and UID from the CNI args.
func (e *entry) podArgs(args []cniArg) error {
	for _, kv := range args {
		key := kv[0]
		if bytes.IndexByte(key, '\\') >= 0 { // escaped: libcni writes none
			if k, err := jsonString(key); err == nil {
				key, _ = json.Marshal(k)
			}
		}
		var dst *string
		// Compared as the JSON text, quotes and all: the keys are ASCII.
		switch string(key) {
		case `"K8S_POD_NAMESPACE"`:
			dst = &e.pod.Namespace
		case `"K8S_POD_NAME"`:
			dst = &e.pod.Name
		case `"K8S_POD_UID"`:
			dst = &e.pod.UID
		default:
			continue
		}
		v, err := jsonString(kv[1])
		if err != nil {
			return fmt.Errorf("cache entry arg %s: %w", kv[0], err)
		}
		*dst = v
	}
	return nil
}

// addResult takes the host-side interfaces and the pod's IPs from the
// result.
func (e *entry) addResult(res *cachedResult) {
	e.hosts = make([]iface, 0, len(res.Interfaces))
	e.ips = make([]netip.Addr, 0, len(res.IPs))
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" && ifc.Name != "" {
			e.hosts = append(e.hosts, iface{ifc.Name, strings.ToLower(ifc.Mac)})
		}
	}
	for _, ip := range res.IPs {
		// An IP of another interface of the result (the bridge's, with
		// isGateway) is not the pod's.
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(res.Interfaces) {
			if res.Interfaces[*ip.Interface].Sandbox == "" {
				continue
			}
		}
		if pfx, err := netip.ParsePrefix(ip.Address); err == nil {
			e.ips = append(e.ips, pfx.Addr().Unmap())
		}
	}
}

// oldResult reads the result of a cache entry in a spec before 0.3.0
// (ip4 and ip6, no interfaces) and converts it with the CNI library.
func oldResult(data []byte) (*cachedResult, error) {
	var raw struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	r, err := create.CreateFromBytes(raw.Result)
	if err != nil {
		return nil, fmt.Errorf("cached result: %w", err)
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("cached result: %w", err)
	}
	out := &cachedResult{CNIVersion: res.CNIVersion}
	for _, ifc := range res.Interfaces {
		if ifc != nil {
			out.Interfaces = append(out.Interfaces, *ifc)
		}
	}
	for _, ip := range res.IPs {
		if ip != nil {
			out.IPs = append(out.IPs, cachedIP{Interface: ip.Interface, Address: ip.Address.String()})
		}
	}
	return out, nil
}

func (c *Cache) add(e *entry) {
	c.entries = append(c.entries, e)
	for _, h := range e.hosts {
		c.byHost[h.name] = append(c.byHost[h.name], e)
	}
	for _, a := range e.ips {
		c.byIP[a] = append(c.byIP[a], e)
	}
}

// Len is the number of attachments read.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	return len(c.entries)
}

// Port is what is known of a bridge port for Lookup.
type Port struct {
	// Name and MAC are the port's interface name and address.
	Name, MAC string
	// IPs are the addresses of the pod-side interface of its veth.
	IPs []string
}

// Lookup returns the pod behind port p, or nil when the cache does not say
// for certain. sameNetns reports whether the namespace file at a cached
// netns path is the namespace the port's veth peer is in.
//
// An attachment names the port when its result lists the port as its
// host-side interface with the port's MAC: the bridge plugin gives every
// veth a fresh random name and address, so an entry left behind by a
// deleted pod cannot match a new pod's port. Otherwise an attachment
// holding one of the port's pod IPs names it only when its netns is the
// veth peer's namespace: a deleted pod's IP is reused by the next pod, and
// the stale entry's namespace is gone. Attachments of more than one
// container that still match leave the port unknown.
func (c *Cache) Lookup(p Port, sameNetns func(path string) bool) *Pod {
	pod, _ := c.LookupNetns(p, sameNetns)
	return pod
}

// LookupNetns is Lookup that also returns the path of the pod's network
// namespace as the cache or the runtime recorded it (a bind mount under
// /var/run/netns, /proc/PID/ns/net), "" when not recorded. It is what was
// recorded, not proof: a caller entering it first checks that it is the
// namespace of the port's veth peer.
func (c *Cache) LookupNetns(p Port, sameNetns func(path string) bool) (*Pod, string) {
	if c == nil {
		return nil, ""
	}
	mac := strings.ToLower(p.MAC)
	var cands []*entry
	verify := false
	for _, e := range c.byHost[p.Name] {
		for _, h := range e.hosts {
			if h.name != p.Name {
				continue
			}
			if h.mac == "" {
				verify = true // a name alone may be reused
			} else if h.mac != mac {
				continue
			}
			cands = append(cands, e)
			break
		}
	}
	if len(cands) > 1 {
		verify = true
	}
	if len(cands) == 0 {
		verify = true
		for _, s := range p.IPs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			for _, e := range c.byIP[a.Unmap()] {
				if !slices.Contains(cands, e) {
					cands = append(cands, e)
				}
			}
		}
	}
	if verify {
		kept := cands[:0]
		for _, e := range cands {
			if e.netns != "" && sameNetns != nil && sameNetns(e.netns) {
				kept = append(kept, e)
			}
		}
		cands = kept
	}
	if len(cands) == 0 {
		return nil, ""
	}
	for _, e := range cands[1:] {
		if e.pod.ContainerID != cands[0].pod.ContainerID {
			return nil, ""
		}
	}
	pod := cands[0].pod
	return &pod, cands[0].netns
}

// Sandbox is a ready pod sandbox as the container runtime reports it over
// CRI (ListPodSandbox, PodSandboxStatus).
type Sandbox struct {
	// ID is the sandbox's ID; Namespace, Name and UID its pod's metadata.
	ID, Namespace, Name, UID string
	// IPs are the pod's IPs (status.network.ip and additionalIps).
	IPs []string
	// Netns is the path of the sandbox's network namespace, from the
	// runtime's verbose status (the OCI spec's network namespace, or
	// /proc/PID/ns/net of the sandbox's process); "" when it does not say.
	Netns string
}

// FromSandboxes indexes what the runtime reported for Lookup. A sandbox
// names a port only through its netns: the pod IP it reports is checked
// against the namespace the port's veth peer is in, as a cache entry
// without a host interface is. One without a netns names nothing.
func FromSandboxes(sbs []Sandbox) *Cache {
	c := &Cache{Skipped: []string{}, byHost: map[string][]*entry{}, byIP: map[netip.Addr][]*entry{}}
	for _, sb := range sbs {
		if sb.Netns == "" {
			continue
		}
		e := &entry{
			pod:   Pod{Namespace: sb.Namespace, Name: sb.Name, UID: sb.UID, ContainerID: sb.ID, Source: SourceCRI},
			netns: sb.Netns,
		}
		for _, s := range sb.IPs {
			if a, err := netip.ParseAddr(s); err == nil {
				e.ips = append(e.ips, a.Unmap())
			}
		}
		c.add(e)
	}
	return c
}
