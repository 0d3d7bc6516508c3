package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/loadgen"
	"github.com/kuberpc/kuberpc/localcluster/clustertest"
)

// TestStatusShowsLiveRates: under load, kuberpc status shows each pod's
// version and its calls per second, p99 and failed share, read from the
// pods' metrics endpoints; --watch, when its output is not a terminal,
// appends a plain table per interval.
func TestStatusShowsLiveRates(t *testing.T) {
	ns := env.Namespace(t)
	pods := deployExample(t, ns, 2)
	cc := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go loadgen.Run(ctx, cc, loadgen.Options{Rate: 200, Duration: 15 * time.Second, Deadline: 2 * time.Second, Stop: stop})
	time.Sleep(2 * time.Second)

	out := mustKuberpc(t, "status", "example", "-n", ns, "--interval", "2s")
	for _, p := range pods {
		var row []string
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == p.Name {
				row = f
			}
		}
		// POD VERSION READY STATUS RESTARTS IP ENDPOINT(3 fields) RPS P99 ERR%
		if len(row) != 12 || row[1] != "v1" || row[2] != "1/1" || row[3] != "Running" {
			t.Fatalf("pod %s: row %q\n%s", p.Name, row, out)
		}
		rps, err := strconv.ParseFloat(row[9], 64)
		// Two replicas share 200 calls/s (plus the resolver's retries).
		if err != nil || rps < 50 || rps > 150 || !strings.HasPrefix(row[10], "≤") || row[11] != "0.0" {
			t.Errorf("pod %s: RPS %q, p99 %q, errors %q; want about 100, a bucket, 0.0\n%s", p.Name, row[9], row[10], row[11], out)
		}
	}

	// --watch into a pipe: plain tables, one per interval, no escapes.
	var buf bytes.Buffer
	wctx, wcancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer wcancel()
	cmd := exec.CommandContext(wctx, cliBinary, "--kubeconfig", env.Cluster.Kubeconfig, "status", "example", "-n", ns, "--watch", "--interval", "1s")
	cmd.Stdout, cmd.Stderr = &buf, &buf
	_ = cmd.Run()
	if n := strings.Count(buf.String(), "POD "); n < 3 || strings.Contains(buf.String(), "\x1b[") {
		t.Errorf("status --watch for 3.5 s into a pipe: %d tables (want 3 or more), escapes %v\n%s", n, strings.Contains(buf.String(), "\x1b["), buf.String())
	}
}

// TestLoadFromAPod: the load generator runs as a pod (the kuberpc CLI as
// an image, under the service's client ServiceAccount), resolving the
// Service from inside the cluster with its token, as it would on a real
// cluster where the host cannot reach pods.
func TestLoadFromAPod(t *testing.T) {
	ns := env.Namespace(t)
	deployExample(t, ns, 2)
	mustKuberpc(t, "image", "load", "kuberpc.local/kuberpc:e2e", cliBinary)
	env.Kubectl(t, ns, "", "run", "load", "--image=kuberpc.local/kuberpc:e2e", "--restart=Never",
		`--overrides={"spec":{"serviceAccountName":"example-client"}}`, "--",
		"load", "-n", ns, "--rate", "200", "--duration", "3s", "--streams", "2")
	clustertest.WaitFor(t, 60*time.Second, "the load pod to finish", func() (bool, string) {
		p, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), "load", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, clustertest.PodState(p)
	})
	out := env.Kubectl(t, ns, "", "logs", "load")
	if !strings.Contains(out, "unary calls: 600, failed 0") || strings.Count(out, "198.18.") < 2 || !strings.Contains(out, "streams: opened 2") {
		t.Errorf("kuberpc load in a pod:\n%s", out)
	}
}
