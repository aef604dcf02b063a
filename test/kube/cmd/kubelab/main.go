// Command kubelab stands up the real one-node Kubernetes lab by hand
// (`make kube-lab`), captures kube-proxy goldens (`make kube-goldens`), and
// builds the lab's binaries (`kubelab build`).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/test/kube/kubelab"
)

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  kubelab up      [--release V] [--mode iptables-nft|iptables-legacy|nftables] [--hairpin]
  kubelab goldens [--out DIR] [--release V[,V...]] [--mode M[,M...]]
  kubelab build   [--release V[,V...]]
  kubelab bench-fixture --out FILE [--release V] [--services N] [--endpoints E]
`)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubelab: "+format+"\n", args...)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	release := fs.String("release", "", "kube-proxy release(s), comma-separated [all for goldens and build, "+kubelab.Newest+" for up]")
	mode := fs.String("mode", "", "mode(s): iptables-nft, iptables-legacy, nftables [all for goldens, iptables-nft for up]")
	out := fs.String("out", "testdata", "goldens: the directory to write RELEASE/MODE/ into")
	hairpin := fs.Bool("hairpin", false, "up: make pods with the bridge plugin's hairpinMode on")
	services := fs.Int("services", 10000, "bench-fixture: how many Services")
	endpoints := fs.Int("endpoints", 5, "bench-fixture: endpoints per Service")
	_ = fs.Parse(os.Args[2:])
	// A signal tears every lab down and exits, whatever step is running.
	kubelab.CloseAllOnSignal()
	ctx := context.Background()
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, *release, *mode, *hairpin)
	case "goldens":
		err = goldens(ctx, *out, list(*release, kubelab.Releases), list(*mode, []string{kubelab.IPTablesNFT, kubelab.IPTablesLegacy, kubelab.NFTables}))
	case "build":
		err = build(list(*release, kubelab.Releases))
	case "bench-fixture":
		r := *release
		if r == "" {
			r = kubelab.Newest
		}
		err = kubelab.BenchFixture(ctx, r, *services, *endpoints, *out, logf)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelab: %v\n", err)
		os.Exit(1)
	}
}

func list(s string, all []string) []string {
	if s == "" {
		return all
	}
	return strings.Split(s, ",")
}

func build(releases []string) error {
	// kubectl: the deploy/ manifests are applied with it in the tests.
	for _, c := range [][2]string{{"etcd", kubelab.EtcdVersion}, {"kube-apiserver", kubelab.Newest}, {"kubectl", kubelab.Newest}} {
		if _, err := kubelab.Binary(c[0], c[1], logf); err != nil {
			return err
		}
	}
	for _, r := range releases {
		if _, err := kubelab.Binary("kube-proxy", r, logf); err != nil {
			return err
		}
	}
	return nil
}

func up(ctx context.Context, release, mode string, hairpin bool) error {
	l, err := kubelab.Start(ctx, kubelab.Options{Release: release, Mode: mode, Hairpin: hairpin, Log: logf})
	if err != nil {
		return err
	}
	defer l.Close()
	// kubectl is a convenience: use it when built, never wait for it.
	kubectl, ok := kubelab.Cached("kubectl", kubelab.Newest)
	if !ok {
		kubectl = "kubectl (build it: test/kube/build.sh kubectl " + kubelab.Newest + ")"
	}
	fmt.Printf(`The lab is up. Reach it with:
  a shell on the node:   ip netns exec %[1]s bash
  hairpinctl:            hairpinctl --netns %[1]s ports   (or doctor, services, ...)
  the API:               ip netns exec %[1]s %[2]s --kubeconfig %[3]s get svc -A
  logs and PKI:          %[4]s
  pods:                  `, l.Node, kubectl, l.AdminKubeconfig, l.Dir)
	for _, p := range l.Pods {
		fmt.Printf("%s/%s %s on %s (netns %s)  ", p.Namespace, p.Name, p.IP, p.HostVeth, p.Netns)
	}
	fmt.Println("\nCtrl-C (or SIGTERM, SIGHUP) tears it down.")
	select {}
}

func goldens(ctx context.Context, out string, releases, modes []string) error {
	for _, r := range releases {
		for _, m := range modes {
			if err := ctx.Err(); err != nil {
				return err
			}
			start := time.Now()
			l, err := kubelab.Start(ctx, kubelab.Options{Release: r, Mode: m, Log: logf})
			if err != nil {
				return fmt.Errorf("%s %s: %w", r, m, err)
			}
			dir := filepath.Join(out, r, m)
			err = l.Capture(ctx, dir)
			if err != nil {
				l.Failed()
			}
			if cerr := l.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s %s: %w", r, m, err)
			}
			logf("captured %s in %.0f s", dir, time.Since(start).Seconds())
		}
	}
	return nil
}
