package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/localcluster/cluster"
)

// throughputSide is one client of the cluster throughput comparison.
type throughputSide struct {
	name string
	cc   *grpc.ClientConn
}

// TestClusterThroughput compares, on the local cluster, what users
// compare: kuberpc's client balancing over 3 example pods through
// kubernetes:///, a plain grpc-go client of the Service's ClusterIP
// through kube-proxy (pick_first over one HTTP/2 connection, so one pod
// gets every call), a second such client (the A/A row: how far two
// identical clients differ in the same run) and load straight at one pod
// (ghz's way), and kuberpc's client again with two connections per pod
// (the fast path's). Each pod is limited to half a CPU, as pods are. Every side
// runs the same closed loop (32 callers) in each round, in an order
// rotated from round to round; the per-pod shares come from the pods' own
// metrics.
//
// What it asserts is behaviour: both kuberpc clients' per-pod shares
// within 10 % of even in every round. The calls per second are a measurement, not a
// pass/fail (on a 2-core machine the test's own client shares the CPU
// with the pods, and one 3 s round in CI is noise-bound): they are logged
// and, in the full run, written to e2e/results with the verdict against
// the goal (kuberpc ≥ the ClusterIP client) and the A/A spread.
func TestClusterThroughput(t *testing.T) {
	ns := env.Namespace(t)
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\nreplicas: 3\n"+
		"drain: {propagationDelay: 1s, timeout: 5s}\nresources: {cpuRequest: 500m, cpuLimit: 500m}\n"+
		"autoscaling: {minReplicas: 3, maxReplicas: 4}\ncallers: [{podLabels: {app: frontend}}]\n"))
	pods := env.WaitReady(t, ns, exampleSelector, 3)
	clusterIP := "dns://" + cluster.DNSServer() + "/example." + ns + ".svc.cluster.local:50051"
	sides := []throughputSide{
		{"kuberpc (kubernetes:///, round_robin)", dial(t, ns)},
		{"grpc-go ClusterIP via kube-proxy (pick_first)", plainConn(t, clusterIP, "")},
		{"A/A: a second such ClusterIP client", plainConn(t, clusterIP, "")},
		{"grpc-go straight at one pod", plainConn(t, "passthrough:///"+net.JoinHostPort(pods[0].Status.PodIP, "50051"), "")},
		{"kuberpc, 2 connections per pod (WithConnectionsPerEndpoint, the fast path's)", dial(t, ns, client.WithConnectionsPerEndpoint(2))},
	}
	kuberpcSides := []int{0, 4}
	rounds, d := 1, 3*time.Second
	if os.Getenv("KUBERPC_E2E_FULL") != "" {
		rounds, d = 5, 10*time.Second
	}
	const callers = 32
	type measure struct {
		qps    []float64
		p99    []time.Duration
		shares [][]float64 // per round, per pod
	}
	res := make([]measure, len(sides))
	for _, sd := range sides { // warm up: connections, the pods' first calls
		if _, _, err := closedLoop(sd.cc, callers, time.Second); err != nil {
			t.Fatalf("%s: %v", sd.name, err)
		}
	}
	for r := range rounds {
		for k := range sides {
			i := (r + k) % len(sides)
			before := podCounts(t, pods)
			qps, p99, err := closedLoop(sides[i].cc, callers, d)
			if err != nil {
				t.Fatalf("%s: %v", sides[i].name, err)
			}
			after := podCounts(t, pods)
			total := 0.0
			for j := range pods {
				total += after[j] - before[j]
			}
			shares := make([]float64, len(pods))
			for j := range pods {
				shares[j] = (after[j] - before[j]) / total
			}
			res[i].qps = append(res[i].qps, qps)
			res[i].p99 = append(res[i].p99, p99)
			res[i].shares = append(res[i].shares, shares)
			t.Logf("round %d %s: %.0f calls/s, p99 %v, per-pod shares %.2f", r+1, sides[i].name, qps, p99.Round(time.Microsecond), shares)
		}
	}
	medQPS := func(i int) float64 { return medianOf(res[i].qps) }
	t.Logf("kuberpc ÷ ClusterIP client %.3f, A/A (second ÷ first ClusterIP client) %.3f", medQPS(0)/medQPS(1), medQPS(2)/medQPS(1))
	worst := 0.0 // the largest departure of a kuberpc share from even, of even
	for _, i := range kuberpcSides {
		for r, shares := range res[i].shares {
			for j, s := range shares {
				off := math.Abs(s*float64(len(pods)) - 1)
				worst = max(worst, off)
				if off > 0.10 {
					t.Errorf("round %d: %s gave pod %s %.1f %% of the calls; want 33.3 %% ± 10 %%", r+1, sides[i].name, pods[j].Name, 100*s)
				}
			}
		}
	}
	if dir := resultsDir(); dir != "" {
		if err := writeThroughput(dir, sides, rounds, d, callers, worst, func(i int) (float64, []float64, []time.Duration, []float64) {
			mean := make([]float64, len(pods))
			for _, sh := range res[i].shares {
				for j := range sh {
					mean[j] += sh[j] / float64(len(res[i].shares))
				}
			}
			return medQPS(i), res[i].qps, res[i].p99, mean
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// closedLoop has callers goroutines call SayHello back to back for d and
// returns the calls per second and the p99 latency; any failure ends it.
func closedLoop(cc *grpc.ClientConn, callers int, d time.Duration) (float64, time.Duration, error) {
	c := example.NewExampleServiceClient(cc)
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				t0 := time.Now()
				_, err := c.SayHello(ctx, &example.Request{Name: "throughput"})
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	slices.Sort(lat)
	return float64(len(lat)) / time.Since(start).Seconds(), lat[len(lat)*99/100], nil
}

// podCounts reads each pod's successful SayHello count from its metrics
// endpoint.
func podCounts(t *testing.T, pods []corev1.Pod) []float64 {
	t.Helper()
	out := make([]float64, len(pods))
	for i, p := range pods {
		resp, err := http.Get("http://" + net.JoinHostPort(p.Status.PodIP, "9090") + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "grpc_server_handled_total{") && strings.Contains(l, `grpc_method="SayHello"`) && strings.Contains(l, `grpc_code="OK"`) {
				v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				if err != nil {
					t.Fatalf("pod %s metrics: %q: %v", p.Name, l, err)
				}
				out[i] += v
			}
		}
		resp.Body.Close()
	}
	return out
}

func medianOf(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// writeThroughput writes cluster_throughput.md and .svg into dir.
// sides are, in order, kuberpc, the ClusterIP client (the baseline), its
// A/A twin, the one-pod client and kuberpc with two connections per pod;
// worst is the largest departure of a kuberpc per-pod share from even, as
// a fraction of even.
func writeThroughput(dir string, sides []throughputSide, rounds int, d time.Duration, callers int, worst float64, get func(int) (float64, []float64, []time.Duration, []float64)) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Throughput on the local cluster\n\nProduced by `KUBERPC_E2E_FULL=1 KUBERPC_E2E_RESULTS=$PWD/e2e/results go test ./e2e -run TestClusterThroughput -v` on %s: 3 example pods limited to 500m CPU each, %d callers in a closed loop, %d rounds of %v per client, order rotated; per-pod shares from the pods' own metrics.\n\n",
		time.Now().UTC().Format("2006-01-02"), callers, rounds, d)
	kub, _, _, _ := get(0)
	base, baseRounds, _, _ := get(1)
	aa, aaRounds, _, _ := get(2)
	two, _, _, _ := get(4)
	roundNoise := 0.0
	for r := range baseRounds {
		roundNoise = max(roundNoise, math.Abs(aaRounds[r]/baseRounds[r]-1))
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	noise := math.Abs(aa/base - 1)
	fmt.Fprintf(&b, "In this run kuberpc's client made %.2f× the calls per second of the plain ClusterIP client (goal ≥ 1.00: %s); two identical ClusterIP clients' medians differed by %.1f %% and their rounds by up to %.1f %% (the A/A row): differences of that size are noise. With two connections per pod, kuberpc's client made %.2f× the ClusterIP client's. Both kuberpc clients' per-pod shares were within %.1f %% of even in every round (goal ≤ 10 %%: %s).\n\n",
		kub/base, verdict(kub >= base), 100*noise, 100*roundNoise, two/base, 100*worst, verdict(worst <= 0.10))
	b.WriteString("| client | QPS (median) | QPS ÷ ClusterIP client | rounds | p99 per round | per-pod share (mean) |\n|---|---|---|---|---|---|\n")
	p := plot.New()
	p.Title.Text = "calls per second, 3 pods at 500m CPU each"
	p.Y.Label.Text = "calls/s (median of rounds)"
	var vals plotter.Values
	var names []string
	for i, sd := range sides {
		qps, all, p99, shares := get(i)
		var rs, ps, ss []string
		for _, q := range all {
			rs = append(rs, fmt.Sprintf("%.0f", q))
		}
		for _, l := range p99 {
			ps = append(ps, l.Round(100*time.Microsecond).String())
		}
		for _, s := range shares {
			ss = append(ss, fmt.Sprintf("%.1f %%", 100*s))
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %s | %s | %s |\n", sd.name, qps, qps/base, strings.Join(rs, ", "), strings.Join(ps, ", "), strings.Join(ss, " / "))
		vals = append(vals, qps)
		names = append(names, sd.name)
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(30))
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(0)
	p.Add(bars)
	p.NominalX(names...)
	if err := p.Save(8*vg.Inch, 4*vg.Inch, filepath.Join(dir, "cluster_throughput.svg")); err != nil {
		return err
	}
	b.WriteString("\n![throughput](cluster_throughput.svg)\n")
	return os.WriteFile(filepath.Join(dir, "cluster_throughput.md"), []byte(b.String()), 0o644)
}
