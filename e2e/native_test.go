package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// steadyFor is how long the Python pods must run without a restart: two
// minutes for the full suite (KUBERPC_E2E_FULL=1), 30 s in CI.
func steadyFor() time.Duration {
	if os.Getenv("KUBERPC_E2E_FULL") != "" {
		return 2 * time.Minute
	}
	return 30 * time.Second
}

// TestNativeServicesDeployedByKuberpc: in Python, C++ and Java, the
// reference server and a service from `kuberpc new --lang <lang>`, each
// deployed with `kuberpc deploy` (kuberpc's manifests: Go-duration drain
// settings, gRPC readiness, HTTP liveness on the metrics port), go Ready,
// stay up without a restart, answer, and drain with exit 0 when a pod is
// deleted. Before, the Python reference crash-looped on DRAIN_DELAY=2s and
// the scaffolded Python service was killed by its liveness probe; C++ and
// Java did not exist.
func TestNativeServicesDeployedByKuberpc(t *testing.T) {
	ns := env.Namespace(t)
	dir := t.TempDir()
	type deployed struct{ lang, name string }
	var all []deployed
	for _, lang := range []string{"python", "cpp", "java"} {
		// The reference server, under the image the cluster test registers.
		ref := filepath.Join(dir, lang+"ref.yaml")
		name := lang + "ref"
		os.WriteFile(ref, []byte("name: "+name+"\nnamespace: "+ns+"\nimage: kuberpc.local/example-"+lang+":v1\nreplicas: 2\ndrain: {propagationDelay: 1s, timeout: 5s}\n"), 0o644)
		mustKuberpc(t, "deploy", "-f", ref)
		all = append(all, deployed{lang, name})

		// A scaffolded service, built and registered as `new` says.
		name = lang + "new"
		mustKuberpc(t, "new", name, "--lang", lang, "--dir", dir)
		svc := filepath.Join(dir, name)
		mustKuberpc(t, "image", "build", "kuberpc.local/"+name+":v1", "--dir", svc)
		y, err := os.ReadFile(filepath.Join(svc, "kuberpc.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		app := strings.Replace(string(y), "replicas: 3", "replicas: 2\nnamespace: "+ns, 1)
		os.WriteFile(filepath.Join(svc, "kuberpc.yaml"), []byte(app), 0o644)
		mustKuberpc(t, "deploy", "-f", filepath.Join(svc, "kuberpc.yaml"))
		all = append(all, deployed{lang, name})
	}

	// Every language serves reflection: the calls need no --proto.
	for _, d := range all {
		env.WaitReady(t, ns, "app.kubernetes.io/name="+d.name, 2)
		args := []string{"call", "example.ExampleService/SayHello", "-d", `{"name":"` + d.lang + `"}`, "--target", "kubernetes:///" + d.name + "." + ns + ":grpc"}
		out, code := kuberpc(t, args...)
		if strings.HasSuffix(d.name, "ref") {
			if code != 0 || !strings.Contains(out, "Hello, "+d.lang+"!") {
				t.Errorf("the reference %s server answered (exit %d) %q", d.lang, code, out)
			}
		} else if code == 0 || !strings.Contains(out, "not implemented yet") {
			t.Errorf("the scaffolded %s service answered (exit %d) %q; want its UNIMPLEMENTED stub", d.lang, code, out)
		}
	}

	time.Sleep(steadyFor())
	pods, err := env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	victims := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 || !cs.Ready {
				t.Errorf("pod %s after %v: ready %v, %d restarts (last state %+v)", p.Name, steadyFor(), cs.Ready, cs.RestartCount, cs.LastTerminationState.Terminated)
			}
		}
		victims[p.Labels["app.kubernetes.io/name"]] = p
	}

	// A clean drain: each deleted pod's process exits on its own after the
	// drain delay, long before the grace period would have it killed (the
	// agent deletes the pod object when the process has exited).
	for _, d := range all {
		victim := victims[d.name]
		grace := time.Duration(*victim.Spec.TerminationGracePeriodSeconds) * time.Second
		w, err := env.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=" + victim.Name})
		if err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		if err := env.Client.CoreV1().Pods(ns).Delete(context.Background(), victim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	wait:
		for deadline := time.After(2 * grace); ; {
			select {
			case ev := <-w.ResultChan():
				if ev.Type != watch.Deleted {
					continue
				}
				took := time.Since(begin)
				t.Logf("%s pod %s gone %v after deletion (grace %v)", d.lang, victim.Name, took.Round(100*time.Millisecond), grace)
				if took >= grace-5*time.Second {
					t.Errorf("pod %s took %v to stop: it was killed at the grace period, not drained", victim.Name, took)
				}
				break wait
			case <-deadline:
				t.Errorf("pod %s still there %v after deletion", victim.Name, 2*grace)
				break wait
			}
		}
		w.Stop()
	}
}
