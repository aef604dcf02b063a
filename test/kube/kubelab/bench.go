package kubelab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// BenchNamespace holds the Services of a benchmark fixture.
const BenchNamespace = "bench"

// CreateBenchServices creates n ClusterIP Services (port 80 "http") in
// BenchNamespace, each with an EndpointSlice of e ready endpoints: the
// first on this node (so kube-proxy writes its hairpin masquerade), the
// others on RemoteNode, as on one node of a cluster. It creates them with
// a few clients at once: the API takes a few hundred objects a second.
func (l *Lab) CreateBenchServices(ctx context.Context, n, e int) error {
	if _, err := l.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: BenchNamespace}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", BenchNamespace, err)
	}
	const workers = 16
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := l.benchService(ctx, i, e); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	start := time.Now()
feed:
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			return err
		case <-ctx.Done():
			break feed
		}
		if i > 0 && i%2000 == 0 {
			l.opts.Log("created %d of %d Services in %.0f s", i, n, time.Since(start).Seconds())
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return ctx.Err()
}

func (l *Lab) benchService(ctx context.Context, i, e int) error {
	name := fmt.Sprintf("svc-%d", i)
	pol := corev1.IPFamilyPolicySingleStack
	svc, err := l.Client.CoreV1().Services(BenchNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: BenchNamespace},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeClusterIP,
			IPFamilies:     []corev1.IPFamily{corev1.IPv4Protocol},
			IPFamilyPolicy: &pol,
			Ports:          []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(ServePort)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create Service %s/%s: %w", BenchNamespace, name, err)
	}
	port, proto, pname := int32(ServePort), corev1.ProtocolTCP, "http"
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name + "-0",
			Namespace: BenchNamespace,
			Labels:    map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "kubelab"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}},
	}
	for j := range e {
		k := i*e + j
		node := RemoteNode
		if j == 0 {
			node = l.NodeName
		}
		ready := true
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 128+k/62500, k/250%250, k%250+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName:   &node,
		})
	}
	if _, err := l.Client.DiscoveryV1().EndpointSlices(BenchNamespace).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create EndpointSlice %s/%s: %w", BenchNamespace, sl.Name, err)
	}
	return nil
}

// WaitBenchSynced waits until kube-proxy's table (nftables mode) sends n
// Services of BenchNamespace to their chains.
func (l *Lab) WaitBenchSynced(ctx context.Context, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		text, err := run("ip", "netns", "exec", l.Node, "nft", "list", "map", "ip", "kube-proxy", "service-ips")
		// Elements read "10.96.0.7 . tcp . 80 : goto service-HASH-bench/svc-7/tcp/http".
		got := strings.Count(text, "-"+BenchNamespace+"/svc-")
		if err == nil && got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-proxy sent %d of %d Services to their chains after %s", got, n, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// BenchFixture stands up the lab in nftables mode, creates n Services of e
// endpoints, and writes the table kube-proxy wrote for them
// (`nft list table ip kube-proxy`, loadable with nft -f) to out.
func BenchFixture(ctx context.Context, release string, n, e int, out string, log func(string, ...any)) (err error) {
	l, err := Start(ctx, Options{Release: release, Mode: NFTables, Log: log})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			l.Failed()
		}
		if cerr := l.Close(); err == nil {
			err = cerr
		}
	}()
	start := time.Now()
	if err := l.CreateBenchServices(ctx, n, e); err != nil {
		return err
	}
	log("created %d Services × %d endpoints in %.0f s; waiting for kube-proxy", n, e, time.Since(start).Seconds())
	synced := time.Now()
	if err := l.WaitBenchSynced(ctx, n, 10*time.Minute); err != nil {
		return err
	}
	log("kube-proxy %s wrote them in %.0f s", release, time.Since(synced).Seconds())
	text, err := run("ip", "netns", "exec", l.Node, "nft", "list", "table", "ip", "kube-proxy")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
