package selftest

import "github.com/hairpinctl/hairpinctl/netops/kubeproxy"

// Options shapes Run. Zero values take the defaults in brackets.
type Options struct {
	// Prefix starts the name of every namespace Run creates [hpselftest].
	Prefix string
	// Backend is how the Service is programmed: "auto" (or empty) for the
	// backend the host's `iptables` command uses, or nftables mode over
	// netlink when there is no iptables command; "iptables-nft",
	// "iptables-legacy" or "nftables".
	Backend string
	// Step, when set, is called as each step ends.
	Step func(Step)
	// Created, when set, is called with each namespace's name as soon as
	// it exists.
	Created func(netnsName string)
}

// Step is one step of the self-test and how it went.
type Step struct {
	// Name says what was done, short enough for a table column.
	Name string `json:"name"`
	// Want is the expected outcome: "reach pod1", "blocked", ...
	Want string `json:"want"`
	// Got is the outcome.
	Got string `json:"got"`
	// OK is true when Got is what was wanted.
	OK bool `json:"ok"`
	// Detail adds what the columns have no room for: versions, names, the
	// full error.
	Detail string `json:"detail,omitempty"`
	// Millis is how long the step took, in milliseconds.
	Millis int64 `json:"millis"`
}

// Report is the outcome of Run.
type Report struct {
	// Passed is true when every step went as wanted: the kernel drops a
	// pod's connection to its own Service while hairpin is off and passes
	// it once hairpin is on.
	Passed bool `json:"passed"`
	// Kernel is the running kernel's release (uname -r).
	Kernel string `json:"kernel"`
	// Backend is how the Service was programmed: iptables-nft,
	// iptables-legacy, or nftables (kube-proxy's nftables mode, over
	// netlink).
	Backend kubeproxy.Backend `json:"backend"`
	// Restore is the iptables-restore binary that loaded it, or "nftables"
	// when it was programmed over netlink.
	Restore string `json:"restore"`
	// Namespaces are the namespaces Run created under /run/netns and
	// removed again.
	Namespaces []string `json:"namespaces"`
	// Steps are the steps in the order they ran.
	Steps []Step `json:"steps"`
}

// Differed returns the steps that did not go as wanted.
func (r *Report) Differed() []Step {
	out := []Step{}
	for _, s := range r.Steps {
		if !s.OK {
			out = append(out, s)
		}
	}
	return out
}
