package e2e

import (
	"bufio"
	"context"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
	"github.com/kuberpc/kuberpc/server"
)

// podGauge reads an unlabelled metric from the pod's /metrics.
func podGauge(t *testing.T, p corev1.Pod, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + net.JoinHostPort(p.Status.PodIP, "9090") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("pod %s: %s %q: %v", p.Name, name, v, err)
			}
			return f
		}
	}
	t.Fatalf("pod %s exports no %s", p.Name, name)
	return 0
}

// TestGoMemoryLimitFollowsTheContainers: a server deployed by kuberpc
// runs with the Go runtime's soft memory limit at 90 % of its
// container's limit (MEMORY_LIMIT from the downward API, as the node
// agent gives it like a kubelet), read from the pod's own
// go_gc_gomemlimit_bytes; when the Deployment's limit is changed outside
// kuberpc (kubectl set resources, a VPA), the new pods follow it.
func TestGoMemoryLimitFollowsTheContainers(t *testing.T) {
	ns := env.Namespace(t)
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\nreplicas: 1\nresources: {memoryLimit: 200Mi}\ndrain: {propagationDelay: 1s, timeout: 2s}\n"))
	check := func(limit int64) {
		t.Helper()
		want := math.Floor(float64(limit) * server.MemoryLimitShare)
		for _, p := range env.WaitReady(t, ns, exampleSelector, 1) {
			if got := podGauge(t, p, "go_gc_gomemlimit_bytes"); got != want {
				t.Errorf("pod %s (memory limit %d): go_gc_gomemlimit_bytes %.0f, want %.0f", p.Name, limit, got, want)
			}
		}
	}
	check(200 << 20)

	ctx := context.Background()
	d, err := env.Client.AppsV1().Deployments(ns).Get(ctx, "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory] = resource.MustParse("300Mi")
	if _, err := env.Client.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 60*time.Second, "the old pod gone", func() (bool, string) {
		pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: exampleSelector})
		if err != nil {
			return false, err.Error()
		}
		var limits []string
		for _, p := range pods.Items {
			limits = append(limits, p.Spec.Containers[0].Resources.Limits.Memory().String())
		}
		return len(limits) == 1 && limits[0] == "300Mi", strings.Join(limits, ", ")
	})
	check(300 << 20)
}
