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

// TestPythonServicesDeployedByKuberpc: the reference Python server and a
// service from `kuberpc new --lang python`, deployed with kuberpc's own
// manifests (Go-duration drain settings, gRPC readiness, HTTP liveness on
// the metrics port), go Ready, stay up without a restart, answer, and
// drain with exit 0 when a pod is deleted. Before, the first crash-looped
// on DRAIN_DELAY=2s and the second was killed by its liveness probe.
func TestPythonServicesDeployedByKuberpc(t *testing.T) {
	ns := env.Namespace(t)
	dir := t.TempDir()
	// The reference server, under the image the cluster test registers.
	ref := filepath.Join(dir, "ref.yaml")
	os.WriteFile(ref, []byte("name: pyref\nnamespace: "+ns+"\nimage: kuberpc.local/example-python:v1\nreplicas: 2\ndrain: {propagationDelay: 1s, timeout: 5s}\n"), 0o644)
	mustKuberpc(t, "deploy", "-f", ref)

	// A scaffolded service, registered as its README says.
	mustKuberpc(t, "new", "pynew", "--lang", "python", "--dir", dir)
	svc := filepath.Join(dir, "pynew")
	mustKuberpc(t, "image", "load", "kuberpc.local/pynew:v1", "/usr/bin/python3", filepath.Join(svc, "python", "server.py"))
	y, err := os.ReadFile(filepath.Join(svc, "kuberpc.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	app := strings.Replace(string(y), "replicas: 3", "replicas: 2\nnamespace: "+ns, 1)
	os.WriteFile(filepath.Join(svc, "kuberpc.yaml"), []byte(app), 0o644)
	mustKuberpc(t, "deploy", "-f", filepath.Join(svc, "kuberpc.yaml"))

	for _, name := range []string{"pyref", "pynew"} {
		env.WaitReady(t, ns, "app.kubernetes.io/name="+name, 2)
	}
	// Python's grpcio here has no reflection: the call takes the proto.
	protoDir := filepath.Join(svc, "proto")
	if out := mustKuberpc(t, "call", "example.ExampleService/SayHello", "-d", `{"name":"py"}`, "--target", "kubernetes:///pyref."+ns+":grpc",
		"--proto", "example.proto", "--import-path", protoDir); !strings.Contains(out, "Hello, py!") {
		t.Errorf("the reference Python server answered %q", out)
	}
	out, code := kuberpc(t, "call", "example.ExampleService/SayHello", "-d", `{"name":"py"}`, "--target", "kubernetes:///pynew."+ns+":grpc",
		"--proto", "example.proto", "--import-path", protoDir)
	if code == 0 || !strings.Contains(out, "not implemented yet") {
		t.Errorf("the scaffolded service answered (exit %d) %q; want its UNIMPLEMENTED stub", code, out)
	}

	time.Sleep(steadyFor())
	pods, err := env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var victim corev1.Pod
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 || !cs.Ready {
				t.Errorf("pod %s after %v: ready %v, %d restarts (last state %+v)", p.Name, steadyFor(), cs.Ready, cs.RestartCount, cs.LastTerminationState.Terminated)
			}
		}
		if strings.HasPrefix(p.Name, "pynew-") {
			victim = p
		}
	}

	// A clean drain: the deleted pod's process exits on its own after the
	// drain delay, long before the grace period would have it killed
	// (the agent deletes the pod object when the process has exited).
	grace := time.Duration(*victim.Spec.TerminationGracePeriodSeconds) * time.Second
	w, err := env.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=" + victim.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	begin := time.Now()
	if err := env.Client.CoreV1().Pods(ns).Delete(context.Background(), victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.After(2 * grace); ; {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Deleted {
				continue
			}
			took := time.Since(begin)
			t.Logf("pod %s gone %v after deletion (grace %v)", victim.Name, took.Round(100*time.Millisecond), grace)
			if took >= grace-5*time.Second {
				t.Errorf("pod %s took %v to stop: it was killed at the grace period, not drained", victim.Name, took)
			}
			return
		case <-deadline:
			t.Fatalf("pod %s still there %v after deletion", victim.Name, 2*grace)
		}
	}
}
