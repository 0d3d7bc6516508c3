package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kuberpc/kuberpc/loadgen"
)

// TestPlainGrpcioServerDeployedByKuberpc: a grpcio server that is not
// kuberpc's (no grpc.health.v1, no /healthz, dies at once on SIGTERM),
// deployed by kuberpc with tcp probes and a preStop sleep, goes Ready and
// rolls over under load with no failed call from kuberpc's client. Then a
// probe another field manager changed to another handler type (kubectl
// patch, grpc → httpGet) no longer breaks the next kuberpc deploy: it
// failed with "may not specify more than 1 handler type" under
// server-side apply.
func TestPlainGrpcioServerDeployedByKuberpc(t *testing.T) {
	ns := env.Namespace(t)
	f := writeExampleApp(t, ns, "image: kuberpc.local/example-python-plain:v1\nreplicas: 3\n"+
		"probes: {type: tcp}\ndrain: {propagationDelay: 1s, timeout: 2s, preStopSleep: 3s}\n")
	mustKuberpc(t, "deploy", "-f", f)
	env.WaitReady(t, ns, exampleSelector, 3)

	clients := faultClients(t, ns)[:1] // kuberpc's
	rate, _ := faultLoad()
	run := underLoadWith(t, clients, loadgen.Options{Rate: rate}, func(mark func(string)) {
		mark("rollout restart")
		env.Kubectl(t, ns, "", "rollout", "restart", "deployment/example")
		env.Kubectl(t, ns, "", "rollout", "status", "deployment/example", "--timeout=180s")
		mark("rolled out")
	})
	report(t, "plain grpcio server, rollout restart", clients, run.results)

	// Another manager changes the readiness probe's handler type ...
	env.Kubectl(t, ns, "", "patch", "deployment/example", "--type=strategic", "-p",
		`{"spec":{"template":{"spec":{"containers":[{"name":"server","readinessProbe":{"tcpSocket":null,"httpGet":{"path":"/","port":50051}}}]}}}}`)
	// ... and kuberpc deploy takes it back, first in a server dry run,
	// while the Deployment is written meanwhile, as the deployment
	// controller writes its status on every step of a rollout (CI failed
	// on "the object has been modified" when kuberpc tied its patch and
	// the dry run's update to one resourceVersion).
	for _, args := range [][]string{{"deploy", "-f", f, "--dry-run=server"}, {"deploy", "-f", f}} {
		stop := writeMeanwhile(ns, "example", func(d *appsv1.Deployment) bool {
			p := d.Spec.Template.Spec.Containers[0].ReadinessProbe
			return p != nil && p.TCPSocket != nil
		})
		out, code := kuberpc(t, args...)
		writes := stop()
		if code != 0 {
			t.Fatalf("kuberpc %v after the probe was patched to httpGet, %d other writes meanwhile: exit %d\n%s", args, writes, code, out)
		}
		if writes < 3 {
			t.Fatalf("only %d other writes to the Deployment while kuberpc %v ran", writes, args)
		}
	}
	d, err := env.Client.AppsV1().Deployments(ns).Get(context.Background(), "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := d.Spec.Template.Spec.Containers[0].ReadinessProbe; p == nil || p.TCPSocket == nil || p.HTTPGet != nil {
		t.Errorf("readiness probe after kuberpc deploy: %+v; want tcpSocket only", p)
	}
	env.Kubectl(t, ns, "", "rollout", "status", "deployment/example", "--timeout=180s")
}

// TestMixedServiceRolloutUnderLoad is scenario 7 of the fault suite: one
// Service in front of Go replicas (kuberpc deploy) and a Python one (the
// reference grpcio server, its own Deployment under the same Service),
// both rolled at once under load: kuberpc's client fails no call.
func TestMixedServiceRolloutUnderLoad(t *testing.T) {
	ns := env.Namespace(t)
	deployExample(t, ns, 3)
	deployLang(t, ns, "python", "kuberpc.local/example-python:v1", 1)
	pods := env.WaitReady(t, ns, exampleSelector, 4)
	langs := map[string]int{}
	for _, p := range pods {
		langs[p.Labels["kuberpc.dev/lang"]]++
	}
	if langs["python"] != 1 || langs[""] != 3 {
		t.Fatalf("pods behind the Service: %v; want 3 Go and 1 Python", langs)
	}
	clients := faultClients(t, ns)
	const scenario = "mixed Go and Python Service, both rolled at once"
	var runs []faultRun
	for r := range repeats() {
		target := []string{"v2", "v1"}[r%2]
		run := underLoad(t, clients, func(mark func(string)) {
			mark("set image " + target + " (Go) and rollout restart (Python)")
			start := time.Now()
			env.Kubectl(t, ns, "", "set", "image", "deployment/example", "server=kuberpc.local/example:"+target)
			env.Kubectl(t, ns, "", "rollout", "restart", "deployment/example-python")
			for _, d := range []string{"example", "example-python"} {
				env.Kubectl(t, ns, "", "rollout", "status", "deployment/"+d, "--timeout=180s")
			}
			t.Logf("both rolled out in %v", time.Since(start).Round(100*time.Millisecond))
			mark("rolled out")
		})
		report(t, fmt.Sprintf("%s (repeat %d)", scenario, r+1), clients, run.results)
		runs = append(runs, run)
	}
	writeFaultResults(t, "mixed_service", scenario, clients, runs)
}

// writeMeanwhile writes an annotation of Deployment ns/name over and over,
// back to back, as controllers write it in a rollout, until the returned
// stop is called, until done reports that the Deployment written is as
// the command under test leaves it (so that the rollout that command
// then waits for is not slowed), or for 2 minutes. stop returns how many
// writes there were.
func writeMeanwhile(ns, name string, done func(*appsv1.Deployment) bool) (stop func() int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	writes := make(chan int)
	go func() {
		n := 0
		for ctx.Err() == nil {
			p := fmt.Sprintf(`{"metadata":{"annotations":{"e2e.kuberpc.dev/write":"%d"}}}`, n)
			d, err := env.Client.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, []byte(p), metav1.PatchOptions{})
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			n++
			if done(d) {
				break
			}
		}
		writes <- n
	}()
	return func() int {
		cancel()
		return <-writes
	}
}
