package kube_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/test/kube/kubelab"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// prometheusOperator is the release whose CRDs (PodMonitor,
// PrometheusRule) the deploy/ examples are checked against, fetched from
// the Go module proxy: its module holds them under example/.
const prometheusOperator = "v0.85.0"

// kubectl runs the lab's kubectl (built from the same release as the API
// server) as the cluster admin, from the node namespace.
func kubectl(t *testing.T, l *kubelab.Lab, stdin string, args ...string) (string, error) {
	t.Helper()
	bin, err := kubelab.Binary("kubectl", kubelab.Newest, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.Node, bin, "--kubeconfig", l.AdminKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func mustKubectl(t *testing.T, l *kubelab.Lab, args ...string) string {
	t.Helper()
	out, err := kubectl(t, l, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// deploy/ against the lab's real kube-apiserver: the manifest make
// deploy-manifest writes is accepted by a server-side dry run and then
// created for real; a pod made from the DaemonSet's template passes
// admission (Pod Security at the namespace's level, the PriorityClass
// resolved); the kustomization builds and applies; and the PodMonitor and
// PrometheusRule examples are valid against the Prometheus Operator's own
// CRDs, installed in the lab.
func TestDeploy(t *testing.T) {
	l := startLabWith(t, kubelab.Options{Mode: kubelab.NFTables, NoProxy: true})
	ctx := context.Background()
	const img = "registry.kubelab.test/hairpinctl:v0.0.0-kubelab"
	manifest := filepath.Join(t.TempDir(), "hairpinctl.yaml")
	mk := exec.Command("make", "--no-print-directory", "-C", "../..", "deploy-manifest", "IMAGE="+img, "DEPLOY_OUT="+manifest)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make deploy-manifest: %v\n%s", err, out)
	}

	// A server-side dry run cannot create the namespace the DaemonSet
	// goes in, so the namespace comes first, for real.
	mustKubectl(t, l, "create", "-f", filepath.Join(absDeploy(t), "namespace.yaml"))
	out := mustKubectl(t, l, "apply", "--dry-run=server", "-f", manifest)
	for _, want := range []string{"namespace/hairpinctl ",
		"priorityclass.scheduling.k8s.io/hairpinctl-node-critical created (server dry run)",
		"daemonset.apps/hairpinctl-watch created (server dry run)"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply --dry-run=server: no %q in:\n%s", want, out)
		}
	}
	if _, err := l.Client.AppsV1().DaemonSets("hairpinctl").Get(ctx, "hairpinctl-watch", metav1.GetOptions{}); err == nil {
		t.Error("the dry run created the DaemonSet")
	}
	out = mustKubectl(t, l, "apply", "-f", manifest)
	for _, want := range []string{"priorityclass.scheduling.k8s.io/hairpinctl-node-critical created",
		"daemonset.apps/hairpinctl-watch created"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply: no %q in:\n%s", want, out)
		}
	}
	ds, err := l.Client.AppsV1().DaemonSets("hairpinctl").Get(ctx, "hairpinctl-watch", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ds.Spec.Template.Spec.Containers[0].Image; got != img {
		t.Errorf("the DaemonSet runs %s, want make deploy-manifest's IMAGE %s", got, img)
	}
	pc, err := l.Client.SchedulingV1().PriorityClasses().Get(ctx, "hairpinctl-node-critical", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A pod of the template, as the DaemonSet controller would make it:
	// admitted, with the class's priority. The namespace's default
	// service account is what the controller-manager (not in the lab)
	// would have made.
	if _, err := l.Client.CoreV1().ServiceAccounts("hairpinctl").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hairpinctl-watch-probe", Namespace: "hairpinctl",
		Labels: ds.Spec.Template.Labels, Annotations: ds.Spec.Template.Annotations}, Spec: ds.Spec.Template.Spec}
	pod.Spec.NodeName = l.NodeName
	got, err := l.Client.CoreV1().Pods("hairpinctl").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatalf("a pod of the DaemonSet's template is refused: %v", err)
	}
	if got.Spec.Priority == nil || *got.Spec.Priority != pc.Value || pc.Value != 1000000000 {
		t.Errorf("pod priority %v, class value %d; want 1000000000", got.Spec.Priority, pc.Value)
	}
	// system-node-critical, for the record: a default API server admits
	// it in any namespace (the kube-system-only rule went in 1.17; a
	// cluster limits it with ResourceQuota's limitedResources). The
	// DaemonSet does not use it for another reason: see priorityclass.yaml.
	pod.Spec.PriorityClassName, pod.Spec.Priority = "system-node-critical", nil
	_, err = l.Client.CoreV1().Pods("hairpinctl").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	t.Logf("a pod with system-node-critical in namespace hairpinctl: admitted %v (%v)", err == nil, err)

	// The kustomization: it builds, names the default image, and applies.
	out = mustKubectl(t, l, "kustomize", absDeploy(t))
	if !strings.Contains(out, "image: ghcr.io/hairpinctl/hairpinctl:latest") || strings.Contains(out, "image: IMAGE") {
		t.Errorf("kubectl kustomize deploy/: the image is not set:\n%s", out)
	}
	mustKubectl(t, l, "apply", "--dry-run=server", "-k", absDeploy(t))

	// The Prometheus Operator's CRDs, then its examples.
	dir := prometheusOperatorDir(t)
	for _, crd := range []string{"podmonitors", "prometheusrules"} {
		mustKubectl(t, l, "create", "-f", filepath.Join(dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_"+crd+".yaml"))
		mustKubectl(t, l, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+crd+".monitoring.coreos.com")
	}
	examples := []string{filepath.Join(absDeploy(t), "podmonitor.yaml"), filepath.Join(absDeploy(t), "prometheusrule.yaml")}
	for _, f := range examples {
		// A freshly established CRD can take a moment to be served for
		// validation: retry the dry run briefly.
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			if _, err = kubectl(t, l, "", "apply", "--dry-run=server", "-f", f); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		mustKubectl(t, l, "create", "-f", f)
	}
	// The PodMonitor scrapes the DaemonSet's named port and selects its
	// pods.
	out = mustKubectl(t, l, "-n", "hairpinctl", "get", "podmonitor", "hairpinctl-watch", "-o", "json")
	var pm struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			PodMetricsEndpoints []struct {
				Port string `json:"port"`
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(out), &pm); err != nil {
		t.Fatal(err)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port != ds.Spec.Template.Spec.Containers[0].Ports[0].Name {
		t.Errorf("PodMonitor endpoints %+v, want the DaemonSet's port %q", pm.Spec.PodMetricsEndpoints, ds.Spec.Template.Spec.Containers[0].Ports[0].Name)
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("PodMonitor selects %s=%s, which the DaemonSet's pods do not have", k, v)
		}
	}
	// A PodMonitor the CRD refuses is refused: the check above has teeth.
	bad := "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: bad, namespace: hairpinctl}\nspec: {podMetricsEndpoints: [{port: 9733}]}\n"
	if _, err := kubectl(t, l, bad, "apply", "--dry-run=server", "-f", "-"); err == nil {
		t.Error("a PodMonitor with a numeric port name was accepted: the CRD is not validating")
	}
}

func absDeploy(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../deploy")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// prometheusOperatorDir downloads the Prometheus Operator's module from
// the Go module proxy (cached like any module) and returns its directory.
func prometheusOperatorDir(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", "github.com/prometheus-operator/prometheus-operator@"+prometheusOperator)
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download prometheus-operator %s: %v\n%s", prometheusOperator, err, out)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download prometheus-operator: %v %s\n%s", err, m.Error, out)
	}
	return m.Dir
}
