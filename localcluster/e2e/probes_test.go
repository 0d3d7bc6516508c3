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

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
)

// TestExecProbeWithEndlessOutput: an exec readiness probe passes, and
// the pod is Ready; then it fails after printing 50 MB, and the pod is
// not Ready, its condition and its Unhealthy event saying why in the
// first 10 KiB of that output, as a kubelet keeps. (Before, the agent
// kept it all: the pod's status was past what the API server takes, so
// the pod stayed Ready.)
func TestExecProbeWithEndlessOutput(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	flip := filepath.Join(t.TempDir(), "fail")
	p := pythonPod("flaky", "import time; time.sleep(600)", corev1.ResourceRequirements{})
	p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1, TimeoutSeconds: 10,
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c",
			"if [ -e " + flip + " ]; then head -c 50000000 /dev/zero | tr '\\0' x; exit 1; fi"}}}}
	createPod(t, ns, p)
	ready := func(want bool) func() (bool, string) {
		return func() (bool, string) {
			cur, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), "flaky", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return clustertest.IsReady(cur) == want, clustertest.PodState(cur)
		}
	}
	clustertest.WaitFor(t, 60*time.Second, "Ready while the probe passes", ready(true))
	if err := os.WriteFile(flip, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 60*time.Second, "not Ready once it fails", ready(false))
	cur, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), "flaky", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cur.Status.Conditions {
		if c.Type == corev1.PodReady {
			if len(c.Message) > 12<<10 || !strings.Contains(c.Message, "xxxx") || !strings.Contains(c.Message, "bytes more)") {
				t.Errorf("the Ready condition's message is %d bytes, %.120q…; want the output's first 10 KiB and how much more there was", len(c.Message), c.Message)
			}
		}
	}
	clustertest.WaitFor(t, 30*time.Second, "an Unhealthy event with the output cut", func() (bool, string) {
		evs, err := env.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=flaky,reason=Unhealthy"})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if strings.Contains(e.Message, "bytes more)") && len(e.Message) < 12<<10 {
				return true, ""
			}
		}
		return false, "no such event among " + strings.Repeat("*", len(evs.Items))
	})
}
