// Package cri asks the container runtime for its pod sandboxes over CRI,
// the way crictl does (ListPodSandbox, then PodSandboxStatus for each),
// to name pods the libcni result cache says nothing about. It speaks the
// two calls' gRPC itself, on net/http's HTTP/2 and protobuf's wire format
// (wire.go), rather than through grpc-go and cri-api's generated types:
// those would run their inits, descriptor registration included, at the
// start of every command.
package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/pods"
)

// DefaultEndpoints are the runtimes' sockets crictl tries when given none,
// in its order: containerd, CRI-O, cri-dockerd.
var DefaultEndpoints = []string{
	"unix:///run/containerd/containerd.sock",
	"unix:///run/crio/crio.sock",
	"unix:///var/run/cri-dockerd.sock",
}

// DefaultTimeout bounds everything Sandboxes does: a runtime that hangs
// must not hang the command that asked.
const DefaultTimeout = 2 * time.Second

// ErrNoRuntime: none of the endpoints has a socket.
var ErrNoRuntime = errors.New("no container runtime socket")

// SocketPath returns the path of a unix:// endpoint (a bare path is taken
// as one, as crictl does).
func SocketPath(endpoint string) (string, error) {
	if strings.HasPrefix(endpoint, "/") {
		return endpoint, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "unix" || u.Path == "" {
		return "", fmt.Errorf("CRI endpoint %q: use unix:///path/to/socket", endpoint)
	}
	return u.Path, nil
}

// Sandboxes lists the ready pod sandboxes of the first endpoint whose
// socket exists, and returns that endpoint. It gives up when ctx is done;
// callers bound it (DefaultTimeout). ErrNoRuntime when no socket exists.
func Sandboxes(ctx context.Context, endpoints []string) ([]pods.Sandbox, string, error) {
	for _, ep := range endpoints {
		path, err := SocketPath(ep)
		if err != nil {
			return nil, ep, err
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
			continue
		}
		sbs, err := list(ctx, path)
		if err != nil {
			return nil, ep, fmt.Errorf("CRI %s: %w", ep, err)
		}
		return sbs, ep, nil
	}
	return nil, "", fmt.Errorf("%w at %s", ErrNoRuntime, strings.Join(endpoints, ", "))
}

func list(ctx context.Context, path string) ([]pods.Sandbox, error) {
	c := dial(path)
	defer c.close()
	resp, err := c.call(ctx, "/runtime.v1.RuntimeService/ListPodSandbox", listPodSandboxRequest())
	if err != nil {
		return nil, err
	}
	items, err := decodeListPodSandboxResponse(resp)
	if err != nil {
		return nil, unmarshalError(err)
	}
	out := make([]pods.Sandbox, 0, len(items))
	for _, it := range items {
		resp, err := c.call(ctx, "/runtime.v1.RuntimeService/PodSandboxStatus", podSandboxStatusRequest(it.id, true))
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			continue // removed meanwhile
		}
		st, err := decodePodSandboxStatusResponse(resp)
		if err != nil {
			continue // as a failed call
		}
		out = append(out, sandbox(it, st))
	}
	return out, nil
}

// unmarshalError words a response that does not decode as grpc-go does.
func unmarshalError(err error) error {
	return &rpcError{code: codeInternal, desc: "grpc: failed to unmarshal the received message: " + err.Error()}
}

func sandbox(it podSandbox, st sandboxStatus) pods.Sandbox {
	sb := pods.Sandbox{ID: it.id, Namespace: it.namespace, Name: it.name, UID: it.uid}
	if st.ip != "" {
		sb.IPs = append(sb.IPs, st.ip)
	}
	sb.IPs = append(sb.IPs, st.extraIPs...)
	sb.Netns = netnsOf(st.info)
	return sb
}

// verboseInfo is the part of containerd's and CRI-O's verbose sandbox
// status that says where the sandbox's network namespace is: the OCI
// runtime spec it was started with, and its process.
type verboseInfo struct {
	Pid         int `json:"pid"`
	RuntimeSpec struct {
		Linux struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	} `json:"runtimeSpec"`
}

func netnsOf(info string) string {
	if info == "" {
		return ""
	}
	var vi verboseInfo
	if err := json.Unmarshal([]byte(info), &vi); err != nil {
		return ""
	}
	for _, ns := range vi.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path
		}
	}
	if vi.Pid > 0 {
		return "/proc/" + strconv.Itoa(vi.Pid) + "/ns/net"
	}
	return ""
}
