// Package netops is the root of hairpinctl's kernel work: a Client bound
// to one network namespace (opened with Open, entered with Client.Do, with
// its netlink sockets made there), the sentinel errors that commands map
// to exit codes, and name validation. The domains live in packages under
// it that take a *Client and never the other way round: bridgeports
// (bridge ports and their hairpin mode), kubeproxy (kube-proxy's Service
// NAT), flows (conntrack), doctor, watch, probe and selftest. None of them
// prints; the commands package formats what they return.
//
// Every operation runs against one network namespace, chosen when a Client
// is opened, so production --netns and the tests use the same code path.
package netops
