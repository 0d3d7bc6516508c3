package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"google.golang.org/grpc"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/loadgen"
	"github.com/kuberpc/kuberpc/localcluster/clustertest"
	"github.com/kuberpc/kuberpc/manifests"
	"github.com/kuberpc/kuberpc/metricsadapter"
)

// The HPA kuberpc renders names the metric the adapter serves.
func TestHPAMetricIsTheAdapters(t *testing.T) {
	if manifests.RequestsPerSecondMetric != metricsadapter.MetricRequestsPerSecond {
		t.Fatalf("manifests name %q, the adapter serves %q", manifests.RequestsPerSecondMetric, metricsadapter.MetricRequestsPerSecond)
	}
}

// TestHPAScalesOnRequestRate: the example service at min 1 / max 5
// replicas with a target of 20 calls/s per pod (kuberpc's HPA, the real
// HPA controller, kuberpc's metrics adapter). A step from 5 to 80 calls/s
// takes it to 4 replicas, over which kuberpc's client spreads the calls;
// back at 5 calls/s it scales down to 1 after its 15 s stabilization. No
// call fails. It writes e2e/results/autoscaling.md and .svg when
// KUBERPC_E2E_RESULTS is set: replicas and per-pod calls per second over
// time, and the time from the step to 4 replicas Ready and serving.
func TestHPAScalesOnRequestRate(t *testing.T) {
	ns := env.Namespace(t)
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\ndrain: {propagationDelay: 1s, timeout: 5s}\n"+
		"autoscaling: {minReplicas: 1, maxReplicas: 5, requestsPerSecond: 20, scaleDownStabilization: 15s}\n"))
	env.WaitReady(t, ns, exampleSelector, 1)
	cc := dial(t, ns)
	ctx := context.Background()

	// Replicas, each second, while the test runs.
	begin := time.Now()
	var mu sync.Mutex
	var ready []float64
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			d, err := env.Client.AppsV1().Deployments(ns).Get(ctx, "example", metav1.GetOptions{})
			if err == nil {
				mu.Lock()
				ready = append(ready, float64(d.Status.ReadyReplicas))
				mu.Unlock()
			}
			select {
			case <-stopWatch:
				return
			case <-tick.C:
			}
		}
	}()
	readyNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		if len(ready) == 0 {
			return 0
		}
		return int(ready[len(ready)-1])
	}

	stopBase, stopStep := make(chan struct{}), make(chan struct{})
	base := loadUntil(t, cc, 5, stopBase)
	time.Sleep(5 * time.Second)
	stepAt := time.Since(begin)
	step := loadUntil(t, cc, 75, stopStep)
	clustertest.WaitFor(t, 90*time.Second, "4 replicas Ready after the load step", func() (bool, string) {
		return readyNow() >= 4, fmt.Sprintf("%d ready", readyNow())
	})
	toReady := time.Since(begin) - stepAt
	// The adapter's view while the load is on.
	got, err := env.CustomMetric(ns, manifests.RequestsPerSecondMetric)
	sum := 0.0
	for _, v := range got {
		sum += v
	}
	t.Logf("4 replicas Ready %v after the step; %s per pod: %v (sum %.1f), %v", toReady.Round(100*time.Millisecond), manifests.RequestsPerSecondMetric, got, sum, err)
	time.Sleep(15 * time.Second)
	close(stopStep)
	stepRes := <-step
	clustertest.WaitFor(t, 2*time.Minute, "back to 1 replica after the load fell", func() (bool, string) {
		list, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: exampleSelector})
		return err == nil && len(list.Items) == 1 && readyNow() == 1, fmt.Sprintf("%d ready", readyNow())
	})
	downAt := time.Since(begin)
	time.Sleep(3 * time.Second)
	close(stopBase)
	baseRes := <-base
	close(stopWatch)
	<-watched

	// When did the new pods carry traffic: the first second after the
	// step in which 4 pods answered calls.
	servingAfter := time.Duration(-1)
	pods := map[int]map[string]int{}
	for _, r := range []loadgen.Result{baseRes} {
		for s, sec := range r.Timeline {
			pods[s] = map[string]int{}
			for p, n := range sec.Peers {
				pods[s][p] += n
			}
		}
	}
	stepStart := int(stepAt / time.Second)
	for s, sec := range stepRes.Timeline {
		for p, n := range sec.Peers {
			if pods[s+stepStart] == nil {
				pods[s+stepStart] = map[string]int{}
			}
			pods[s+stepStart][p] += n
		}
	}
	for s := stepStart; s < len(baseRes.Timeline); s++ {
		if len(pods[s]) >= 4 && servingAfter < 0 {
			servingAfter = time.Duration(s-stepStart) * time.Second
		}
	}
	for name, r := range map[string]loadgen.Result{"5 calls/s throughout": baseRes, "75 calls/s step": stepRes} {
		if r.Failed() != 0 {
			t.Errorf("%s: %d calls failed (%v); want none through scale-up and scale-down", name, r.Failed(), r.Codes)
		}
	}
	if servingAfter < 0 {
		t.Errorf("never 4 pods answering in one second")
	}
	t.Logf("4 pods answering %v after the step; back to 1 replica %v after the step ended", servingAfter, downAt-stepAt-toReady-15*time.Second)
	if dir := resultsDir(); dir != "" {
		writeAutoscalingResults(t, dir, ready, pods, stepAt, toReady, servingAfter, baseRes, stepRes)
	}
}

func writeAutoscalingResults(t *testing.T, dir string, ready []float64, pods map[int]map[string]int, stepAt, toReady, servingAfter time.Duration, results ...loadgen.Result) {
	t.Helper()
	calls, failed := 0, 0
	for _, r := range results {
		calls += len(r.Latencies) + r.Failed()
		failed += r.Failed()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Autoscaling on request rate\n\nWritten by `%s` (e2e/autoscaling_test.go) on %s, on the local cluster: the example service at min 1 / max 5 replicas, "+
		"an HPA target of 20 calls/s per pod (kuberpc's metrics adapter, window 20 s, scraped every 2 s; the HPA controller syncing every 5 s), "+
		"kuberpc's client sending 5 calls/s throughout and 75 more from %.0f s for about %.0f s.\n\n",
		t.Name(), time.Now().UTC().Format("2006-01-02"), stepAt.Seconds(), (toReady + 15*time.Second).Seconds())
	fmt.Fprintf(&b, "![replicas and calls per pod](autoscaling.svg)\n\n| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| load step to 4 replicas Ready | %.1f s (goal < 30 s) |\n", toReady.Seconds())
	fmt.Fprintf(&b, "| load step to 4 pods answering calls | %.0f s |\n", servingAfter.Seconds())
	fmt.Fprintf(&b, "| calls, failed | %d, %d |\n", calls, failed)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "autoscaling.md"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := plot.New()
	p.Title.Text = "HPA on request rate: ready replicas (×10) and calls per second per pod"
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "calls per second; ready replicas × 10"
	var rs plotter.XYs
	for s, n := range ready {
		rs = append(rs, plotter.XY{X: float64(s), Y: 10 * n})
	}
	line, err := plotter.NewLine(rs)
	if err != nil {
		t.Fatal(err)
	}
	line.Width = vg.Points(2.5)
	p.Add(line)
	p.Legend.Add("ready replicas × 10", line)
	peers := map[string]bool{}
	for _, m := range pods {
		for p := range m {
			peers[p] = true
		}
	}
	names := make([]string, 0, len(peers))
	for p := range peers {
		names = append(names, p)
	}
	sort.Strings(names)
	last := 0
	for s := range pods {
		last = max(last, s)
	}
	for i, name := range names {
		var xys plotter.XYs
		for s := 0; s <= last; s++ {
			xys = append(xys, plotter.XY{X: float64(s), Y: float64(pods[s][name])})
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			t.Fatal(err)
		}
		l.Color = plotutil.Color(i + 1)
		p.Add(l)
		p.Legend.Add(name, l)
	}
	p.Legend.Top = true
	if err := p.Save(11*vg.Inch, 5*vg.Inch, filepath.Join(dir, "autoscaling.svg")); err != nil {
		t.Fatal(err)
	}
}

// TestHPAScalesOnCPU: the same service with a CPU target only (50 % of
// its 100m request) and a handler that burns 5 ms of CPU per call: 60
// calls/s (about 300m) take it to 4 or more replicas through
// metrics-server's metrics.k8s.io, and back at 5 calls/s it scales down
// to 1. No call fails, up or down.
func TestHPAScalesOnCPU(t *testing.T) {
	ns := env.Namespace(t)
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\ndrain: {propagationDelay: 1s, timeout: 5s}\n"+
		"env: {EXAMPLE_CPU_PER_CALL: 5ms}\n"+
		"autoscaling: {minReplicas: 1, maxReplicas: 5, cpuUtilization: 50, scaleDownStabilization: 15s}\n"))
	env.WaitReady(t, ns, exampleSelector, 1)
	cc := dial(t, ns)
	ctx := context.Background()
	readyReplicas := func() int32 {
		d, err := env.Client.AppsV1().Deployments(ns).Get(ctx, "example", metav1.GetOptions{})
		if err != nil {
			return -1
		}
		return d.Status.ReadyReplicas
	}
	stopBase, stop := make(chan struct{}), make(chan struct{})
	base := loadUntil(t, cc, 5, stopBase)
	done := loadUntil(t, cc, 55, stop)
	start := time.Now()
	clustertest.WaitFor(t, 2*time.Minute, "4 or more replicas Ready on CPU", func() (bool, string) {
		n := readyReplicas()
		return n >= 4, fmt.Sprintf("%d ready", n)
	})
	t.Logf("4 replicas Ready %v after the CPU load began", time.Since(start).Round(100*time.Millisecond))
	close(stop)
	clustertest.WaitFor(t, 2*time.Minute, "back to 1 replica at 5 calls/s", func() (bool, string) {
		n := readyReplicas()
		return n == 1, fmt.Sprintf("%d ready", n)
	})
	close(stopBase)
	for _, res := range []loadgen.Result{<-done, <-base} {
		if res.Failed() != 0 {
			t.Errorf("%d calls failed (%v); want none", res.Failed(), res.Codes)
		}
	}
}

// TestHPAUnknownMetricSaysWhy: an HPA naming a metric no pod exposes gets
// a condition that says so, in the adapter's words.
func TestHPAUnknownMetricSaysWhy(t *testing.T) {
	ns := env.Namespace(t)
	deployExample(t, ns, 1)
	target := resource.MustParse("10")
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "nonsense"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "example"},
			MinReplicas:    ptrTo(int32(1)), MaxReplicas: 2,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: "grpc_server_nonsense"},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: &target},
			}}},
		},
	}
	env.Kubectl(t, ns, "", "delete", "hpa", "example")
	if _, err := env.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(context.Background(), hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, time.Minute, "a ScalingActive=False condition naming the metric", func() (bool, string) {
		cur, err := env.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(context.Background(), "nonsense", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == autoscalingv2.ScalingActive && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "grpc_server_nonsense") {
				t.Logf("condition: %s: %s", c.Reason, c.Message)
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", cur.Status.Conditions)
	})
}

func ptrTo[T any](v T) *T { return &v }

// TestMetricsAdapterManifestsPassServerDryRun: the adapter's objects for
// a real cluster (kuberpc manifests --metrics-adapter-image) are admitted
// by the apiserver. (Its first run found the Deployment's selector
// overwritten by the scraper labels.) The APIServices are left out: the
// local cluster registers the same names for its own adapter, with a CA
// bundle, which insecureSkipTLSVerify may not join.
func TestMetricsAdapterManifestsPassServerDryRun(t *testing.T) {
	y := mustKuberpc(t, "manifests", "--metrics-adapter-image", "kuberpc.local/kuberpc:e2e", "-n", "kube-system")
	var docs []string
	apiServices := 0
	for _, d := range strings.Split(y, "\n---\n") {
		if strings.Contains(d, "\nkind: APIService\n") {
			apiServices++
			continue
		}
		docs = append(docs, d)
	}
	if apiServices != 2 {
		t.Errorf("%d APIServices rendered; want v1beta2 and v1beta1", apiServices)
	}
	out := env.Kubectl(t, "kube-system", strings.Join(docs, "\n---\n"), "apply", "--dry-run=server", "-f", "-")
	for _, want := range []string{"serviceaccount/kuberpc-metrics-adapter", "clusterrole.rbac.authorization.k8s.io/kuberpc-metrics-adapter",
		"clusterrolebinding.rbac.authorization.k8s.io/kuberpc-metrics-adapter:auth-delegator", "rolebinding.rbac.authorization.k8s.io/kuberpc-metrics-adapter:auth-reader",
		"deployment.apps/kuberpc-metrics-adapter", "service/kuberpc-metrics-adapter"} {
		if !strings.Contains(out, want) {
			t.Errorf("server dry run: no %s in\n%s", want, out)
		}
	}
}

// loadUntil sends rate unary calls per second through cc until stop is
// closed (at most 5 minutes), and then delivers the result.
func loadUntil(t *testing.T, cc *grpc.ClientConn, rate int, stop chan struct{}) chan loadgen.Result {
	out := make(chan loadgen.Result, 1)
	go func() {
		res, err := loadgen.Run(context.Background(), cc, loadgen.Options{Rate: rate, Duration: 5 * time.Minute, Deadline: 2 * time.Second, Stop: stop})
		if err != nil {
			t.Error(err)
		}
		out <- res
	}()
	return out
}
