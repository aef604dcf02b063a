package kubelab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// PluginDir is where Debian's containernetworking-plugins puts the plugins.
const PluginDir = "/usr/lib/cni"

// NetworkName is the CNI network's name, as in its conflist.
const NetworkName = "kubelab"

// ServePort is where every pod serves TCP and UDP: each connection or
// datagram is answered with the pod's name.
const ServePort = 8080

// CNI makes and removes pods the way a container runtime does: libcni runs
// the real bridge and host-local plugins with the node namespace as "host",
// and keeps its result cache.
type CNI struct {
	// CacheDir is libcni's cache (results/ inside), what runtimes write
	// under /var/lib/cni.
	CacheDir string
	// ConfList is the network configuration; ConfDir holds it as
	// 10-kubelab.conflist, as a runtime reads it from /etc/cni/net.d.
	ConfList []byte
	ConfDir  string

	lab  *Lab
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	mu   sync.Mutex
	pods []*Pod
	n    int
}

// Pod is a pod the CNI plugin wired to the node's bridge.
type Pod struct {
	// Namespace and Name are the Kubernetes pod's; UID is made up.
	Namespace, Name, UID string
	// ContainerID is the sandbox's ID as the runtime passes it to CNI.
	ContainerID string
	// Netns is the pod's network namespace under /run/netns.
	Netns string
	// IP and IP6 are what host-local gave it.
	IP, IP6 net.IP
	// HostVeth is the node side of its veth, a port of cni0.
	HostVeth string

	closers []func() error
}

func newCNI(l *Lab) (*CNI, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       NetworkName,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      BridgeName,
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": l.opts.Hairpin,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": filepath.Join(l.Dir, "ipam"),
				"ranges": []any{
					[]any{map[string]any{"subnet": PodCIDR}},
					[]any{map[string]any{"subnet": PodCIDR6}},
				},
				"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "::/0"}},
			},
		}},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("CNI conflist: %w", err)
	}
	cache := filepath.Join(l.Dir, "cni-cache")
	confDir := filepath.Join(l.Dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-kubelab.conflist"), b, 0o644); err != nil {
		return nil, err
	}
	return &CNI{
		CacheDir: cache,
		ConfDir:  confDir,
		ConfList: b,
		lab:      l,
		cni:      libcni.NewCNIConfigWithCacheDir([]string{PluginDir}, cache, nil),
		list:     list,
	}, nil
}

func (c *CNI) runtimeConf(p *Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       "/run/netns/" + p.Netns,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
			{"K8S_POD_UID", p.UID},
		},
	}
}

// Add makes pod default/NAME: a namespace, the plugin's ADD run from the
// node namespace, and a TCP and UDP server on ServePort.
func (c *CNI) Add(ctx context.Context, name string) (*Pod, error) {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	p := &Pod{
		Namespace:   "default",
		Name:        name,
		UID:         fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16]),
		ContainerID: hex.EncodeToString(id),
		Netns:       fmt.Sprintf("klpod-%s-%d", c.lab.id, n),
	}
	if err := c.lab.addNS(p.Netns); err != nil {
		return nil, err
	}
	var res *types100.Result
	err := in(c.lab.Node, func() error {
		r, err := c.cni.AddNetworkList(ctx, c.list, c.runtimeConf(p))
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("CNI ADD %s: %w", name, err)
	}
	c.mu.Lock()
	c.pods = append(c.pods, p)
	c.mu.Unlock()
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" && ifc.Name != BridgeName {
			p.HostVeth = ifc.Name
		}
	}
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() != nil {
			p.IP = ip.Address.IP.To4()
		} else {
			p.IP6 = ip.Address.IP
		}
	}
	if p.IP == nil || p.HostVeth == "" {
		return nil, fmt.Errorf("CNI ADD %s: result without an IPv4 address or host veth: %+v", name, res)
	}
	if err := p.serve(); err != nil {
		return nil, fmt.Errorf("serve in %s: %w", name, err)
	}
	return p, nil
}

// Del runs the plugin's DEL, stops the pod's servers and removes its
// namespace.
func (c *CNI) Del(ctx context.Context, p *Pod) error {
	for _, f := range p.closers {
		_ = f()
	}
	p.closers = nil
	err := in(c.lab.Node, func() error { return c.cni.DelNetworkList(ctx, c.list, c.runtimeConf(p)) })
	if err != nil {
		return fmt.Errorf("CNI DEL %s: %w", p.Name, err)
	}
	if _, err := run("ip", "netns", "del", p.Netns); err != nil {
		return err
	}
	c.lab.mu.Lock()
	for i, n := range c.lab.nsMade {
		if n == p.Netns {
			c.lab.nsMade = append(c.lab.nsMade[:i], c.lab.nsMade[i+1:]...)
			break
		}
	}
	c.lab.mu.Unlock()
	return nil
}

// StopServing closes the pod's servers: its port then refuses TCP
// connections and answers UDP with ICMP port unreachable.
func (p *Pod) StopServing() {
	for _, f := range p.closers {
		_ = f()
	}
	p.closers = nil
}

// serve answers TCP connections and UDP datagrams on ServePort, from
// sockets made inside the pod's namespace.
func (p *Pod) serve() error {
	return in(p.Netns, func() error {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", ServePort))
		if err != nil {
			return err
		}
		pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", ServePort))
		if err != nil {
			ln.Close()
			return err
		}
		p.closers = append(p.closers, ln.Close, pc.Close)
		reply := []byte(p.Name + "\n")
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write(reply)
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 1500)
			for {
				_, addr, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(reply, addr)
			}
		}()
		return nil
	})
}
