// Package netops does all of hairpinctl's kernel work: it reads and sets
// bridge-port hairpin mode over netlink, reads kube-proxy's Service NAT, and
// follows conntrack. It returns plain data and never prints; the commands
// package formats what it returns.
//
// Every operation runs against one network namespace, chosen when a Client
// is opened, so production --netns and the tests use the same code path.
package netops
