package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// CNIPluginDir is where Debian's containernetworking-plugins puts the
// bridge and host-local plugins.
const CNIPluginDir = "/usr/lib/cni"

// CNI attaches pods to one network the way a container runtime does:
// libcni runs the real bridge and host-local plugins from the node
// namespace and keeps its result cache in CacheDir, as containerd and
// CRI-O keep it in /var/lib/cni.
type CNI struct {
	// Network is the network's name.
	Network string
	// Bridge is the bridge the plugin puts the pods on (it creates it
	// when missing).
	Bridge string
	// CacheDir is libcni's cache directory (results/ inside).
	CacheDir string

	l    *Lab
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

// CNIConfig shapes a CNI network. Zero values take the defaults in brackets.
type CNIConfig struct {
	// Network is the network's name [lab].
	Network string
	// Bridge is the bridge [the lab's bridge].
	Bridge string
	// Subnet is host-local's subnet [10.244.0.0/24, the lab's bridge's];
	// RangeStart and RangeEnd bound the addresses it hands out
	// [.100 to .199 of the lab's subnet, away from the hand-made pods].
	Subnet, RangeStart, RangeEnd string
	// CacheDir is libcni's cache directory; networks of one node share it
	// [a directory of the lab's, removed on Close].
	CacheDir string
	// CNIVersion is the conflist's spec version, which the plugins answer
	// in and libcni caches the result in [1.0.0].
	CNIVersion string
}

// CNIPod is a pod namespace with the identity a kubelet gives a pod.
type CNIPod struct {
	// Namespace, Name and UID are the Kubernetes pod's.
	Namespace, Name, UID string
	// ContainerID is the sandbox's ID, as the runtime passes it to CNI.
	ContainerID string
	// Netns is the pod namespace's name under /run/netns; NetnsPath its path.
	Netns, NetnsPath string
	// Attachments are the pod's interfaces, in the order attached.
	Attachments []*Attachment
}

// Attachment is one interface CNI ADD gave a pod.
type Attachment struct {
	// Network is the CNI network's name; IfName the pod-side interface.
	Network, IfName string
	// HostVeth and HostMAC are the node end of the veth, a bridge port.
	HostVeth, HostMAC string
	// IPs are what IPAM gave the pod's interface.
	IPs []net.IP
}

// NewCNI makes a CNI network for the lab's node.
func (l *Lab) NewCNI(o CNIConfig) (*CNI, error) {
	if o.Network == "" {
		o.Network = "lab"
	}
	if o.Bridge == "" {
		o.Bridge = l.Bridge
	}
	if o.Subnet == "" {
		o.Subnet, o.RangeStart, o.RangeEnd = "10.244.0.0/24", "10.244.0.100", "10.244.0.199"
	}
	if o.CNIVersion == "" {
		o.CNIVersion = "1.0.0"
	}
	dir, err := os.MkdirTemp("", "hairpinctl-lab-cni-")
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.dirs = append(l.dirs, dir)
	l.mu.Unlock()
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(dir, "cache")
	}
	rng := map[string]any{"subnet": o.Subnet}
	if o.RangeStart != "" {
		rng["rangeStart"] = o.RangeStart
	}
	if o.RangeEnd != "" {
		rng["rangeEnd"] = o.RangeEnd
	}
	conf, err := json.Marshal(map[string]any{
		"cniVersion": o.CNIVersion,
		"name":       o.Network,
		"plugins": []any{map[string]any{
			"type":   "bridge",
			"bridge": o.Bridge,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": filepath.Join(dir, "ipam"),
				"ranges":  []any{[]any{rng}},
			},
		}},
	})
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return nil, fmt.Errorf("lab: CNI conflist: %w", err)
	}
	return &CNI{
		Network:  o.Network,
		Bridge:   o.Bridge,
		CacheDir: o.CacheDir,
		l:        l,
		cni:      libcni.NewCNIConfigWithCacheDir([]string{CNIPluginDir}, o.CacheDir, nil),
		list:     list,
	}, nil
}

// NewCNIPod makes the namespace of pod namespace/name, with a fresh
// sandbox ID and UID; Attach gives it interfaces. Close removes it.
func (l *Lab) NewCNIPod(namespace, name string) (*CNIPod, error) {
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	p := &CNIPod{
		Namespace:   namespace,
		Name:        name,
		UID:         fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16]),
		ContainerID: hex.EncodeToString(id),
	}
	p.Netns = fmt.Sprintf("%s-cni-%s-%s", l.opts.Prefix, hex.EncodeToString(id[:3]), strings.TrimPrefix(l.Node, l.opts.Prefix+"-node-"))
	p.NetnsPath = "/run/netns/" + p.Netns
	h, err := l.newNamed(p.Netns)
	if err != nil {
		return nil, err
	}
	h.Close()
	return p, nil
}

func (c *CNI) runtimeConf(p *CNIPod, ifName string) *libcni.RuntimeConf {
	// What kubelet's runtime passes: the pod's identity as CNI_ARGS.
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.NetnsPath,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
			{"K8S_POD_UID", p.UID},
		},
	}
}

// Attach runs CNI ADD for p's interface ifName on this network. libcni
// writes the result, with the pod's args, to its cache.
func (c *CNI) Attach(p *CNIPod, ifName string) (*Attachment, error) {
	var res *types100.Result
	err := In(c.l.NodeNs, func() error {
		r, err := c.cni.AddNetworkList(context.Background(), c.list, c.runtimeConf(p, ifName))
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: CNI ADD %s/%s %s: %w", p.Namespace, p.Name, ifName, err)
	}
	a := &Attachment{Network: c.Network, IfName: ifName}
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" && ifc.Name != c.Bridge {
			a.HostVeth, a.HostMAC = ifc.Name, ifc.Mac
		}
	}
	for _, ip := range res.IPs {
		a.IPs = append(a.IPs, ip.Address.IP)
	}
	if a.HostVeth == "" || len(a.IPs) == 0 {
		return nil, fmt.Errorf("lab: CNI ADD %s/%s: result without a host veth or an IP: %+v", p.Namespace, p.Name, res)
	}
	p.Attachments = append(p.Attachments, a)
	return a, nil
}

// Detach runs CNI DEL for p's interface ifName: the plugin removes the
// veth, IPAM releases the address and libcni drops the cache entry.
func (c *CNI) Detach(p *CNIPod, ifName string) error {
	err := In(c.l.NodeNs, func() error {
		return c.cni.DelNetworkList(context.Background(), c.list, c.runtimeConf(p, ifName))
	})
	if err != nil {
		return fmt.Errorf("lab: CNI DEL %s/%s %s: %w", p.Namespace, p.Name, ifName, err)
	}
	for i, a := range p.Attachments {
		if a.Network == c.Network && a.IfName == ifName {
			p.Attachments = append(p.Attachments[:i], p.Attachments[i+1:]...)
			break
		}
	}
	return nil
}

// CacheFile is the cache entry libcni keeps for p's interface ifName on
// this network.
func (c *CNI) CacheFile(p *CNIPod, ifName string) string {
	return filepath.Join(c.CacheDir, "results", c.Network+"-"+p.ContainerID+"-"+ifName)
}

// DeleteNetns removes p's namespace without CNI DEL, as when a node loses
// a sandbox: the kernel destroys its veths, the cache entries stay.
func (l *Lab) DeleteNetns(p *CNIPod) error {
	err := netns.DeleteNamed(p.Netns)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lab: delete netns %s: %w", p.Netns, err)
	}
	return nil
}
