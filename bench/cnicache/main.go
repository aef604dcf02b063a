// Command cnicache is bench/ports.sh's helper: it writes the libcni result
// cache a container runtime would have written for the bench's pods, with
// libcni's own code (CNIConfig.AddNetworkList with a cache directory), so
// hairpinctl ports reads a cache of the real format and size.
//
//	cnicache write CACHEDIR NS N   run in the node namespace: attach pod i
//	                               (netns NS-pi, port vi, 10.(64+i/250).(i%250).10)
//	                               through libcni for i in 1..N
//
// The bench's pods already exist (made with ip -batch, far faster than
// N bridge plugin runs), so the plugin libcni runs is this binary again,
// under the name hpbench: through the CNI project's plugin skeleton it
// answers ADD with a result describing the pod's existing veth and
// address, as the bridge plugin's result would.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

const pluginName = "hpbench"

func main() {
	if os.Getenv("CNI_COMMAND") != "" {
		skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Del: func(*skel.CmdArgs) error { return nil }, Check: func(*skel.CmdArgs) error { return nil }},
			version.All, "hairpinctl bench stand-in for the bridge plugin")
		return
	}
	if len(os.Args) != 5 || os.Args[1] != "write" {
		fmt.Fprintln(os.Stderr, "usage: cnicache write CACHEDIR NS N")
		os.Exit(2)
	}
	if err := write(os.Args[2], os.Args[3], os.Args[4]); err != nil {
		fmt.Fprintln(os.Stderr, "cnicache:", err)
		os.Exit(1)
	}
}

// add answers CNI ADD from the values the writer put in CNI_ARGS.
func add(args *skel.CmdArgs) error {
	kv := map[string]string{}
	for _, p := range strings.Split(args.Args, ";") {
		if k, v, ok := strings.Cut(p, "="); ok {
			kv[k] = v
		}
	}
	ip, ipn, err := net.ParseCIDR(kv["POD_IP"] + "/32")
	if err != nil {
		return err
	}
	ipn.IP = ip
	pod := 2 // the address is the pod's interface's, Interfaces[2]
	res := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: "br0"},
			{Name: kv["HOST_VETH"], Mac: kv["HOST_MAC"]},
			{Name: args.IfName, Sandbox: args.Netns},
		},
		IPs: []*types100.IPConfig{{Interface: &pod, Address: *ipn}},
	}
	return types.PrintResult(res, res.CNIVersion)
}

func write(cacheDir, ns, count string) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	plugins, err := os.MkdirTemp("", "hpbench-plugins-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(plugins)
	if err := os.Symlink(self, filepath.Join(plugins, pluginName)); err != nil {
		return err
	}
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "bench",
		"plugins":    []any{map[string]any{"type": pluginName, "bridge": "br0"}},
	})
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{plugins}, cacheDir, nil)
	for i := 1; i <= n; i++ {
		veth := "v" + strconv.Itoa(i)
		mac, err := os.ReadFile("/sys/class/net/" + veth + "/address")
		if err != nil {
			return fmt.Errorf("%s: %w (run in the bench's node namespace)", veth, err)
		}
		id := fmt.Sprintf("%064x", i)
		rt := &libcni.RuntimeConf{
			ContainerID: id,
			NetNS:       "/run/netns/" + ns + "-p" + strconv.Itoa(i),
			IfName:      "eth0",
			Args: [][2]string{
				{"IgnoreUnknown", "1"},
				{"K8S_POD_NAMESPACE", "bench"},
				{"K8S_POD_NAME", "pod-" + strconv.Itoa(i)},
				{"K8S_POD_INFRA_CONTAINER_ID", id},
				{"K8S_POD_UID", fmt.Sprintf("00000000-0000-0000-0000-%012x", i)},
				{"HOST_VETH", veth},
				{"HOST_MAC", strings.TrimSpace(string(mac))},
				{"POD_IP", fmt.Sprintf("10.%d.%d.10", 64+i/250, i%250)},
			},
		}
		if _, err := cni.AddNetworkList(context.Background(), list, rt); err != nil {
			return fmt.Errorf("pod %d: %w", i, err)
		}
	}
	return nil
}
