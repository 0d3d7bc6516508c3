package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// TestExecHandlersThatLeaveAChild: a handler whose command leaves a
// child holding its output (sh -c 'sleep 30 & ...') ends at its timeout,
// not when the child lets go of the output: a liveness probe that does so
// (1 s timeout) has its container restarted within seconds, and a
// preStop hook that does so no longer keeps its container running past
// the pod's 2 s grace period. (Before, each waited for the child's 30 s;
// with a longer-lived child, for good: the probe loop stopped, and the
// container outlived its deleted pod.) The children are short-lived so
// that those of a probe in flight when the cluster stops end soon after.
func TestExecHandlersThatLeaveAChild(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	live := pythonPod("live", "import time; time.sleep(600)", corev1.ResourceRequirements{})
	live.Spec.Containers[0].LivenessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1, TimeoutSeconds: 1,
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c", "sleep 30 & exit 0"}}}}
	marker := "# the stop pod of " + ns
	stop := pythonPod("stop", "import time; time.sleep(600) "+marker, corev1.ResourceRequirements{})
	stop.Spec.TerminationGracePeriodSeconds = ptr(int64(2))
	stop.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
		Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}}}}
	createPod(t, ns, stop)
	var pid int
	clustertest.WaitFor(t, 60*time.Second, "the stop pod's process running", func() (bool, string) {
		pid = processWith(marker)
		return pid != 0, ""
	})
	createPod(t, ns, live)
	clustertest.WaitFor(t, 15*time.Second, "restarted by its liveness probe, whose first run failed at its 1 s timeout", func() (bool, string) {
		cur, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), "live", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cs := cur.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].RestartCount >= 1, clustertest.PodState(cur)
	})
	if err := env.Client.CoreV1().Pods(ns).Delete(context.Background(), "stop", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 10*time.Second, "the container's process gone, its preStop hook ended at the 2 s grace period", func() (bool, string) {
		err := syscall.Kill(pid, 0)
		return errors.Is(err, syscall.ESRCH), fmt.Sprintf("process %d: %v", pid, err)
	})
}

// TestContainerIDWithoutProbes: a pod without probes, whose status
// changes no more once it runs, shows its container's ID, kuberpc://PID
// of the container's process, as a kubelet always shows one. (Before,
// the status went out as the run began, before its monitor had written
// the pid, and the ID stayed empty.)
func TestContainerIDWithoutProbes(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	marker := "# the plain pod of " + ns
	createPod(t, ns, pythonPod("plain", "import time; time.sleep(600) "+marker, corev1.ResourceRequirements{}))
	var cur *corev1.Pod
	clustertest.WaitFor(t, 30*time.Second, "a container ID", func() (bool, string) {
		var err error
		if cur, err = env.Client.CoreV1().Pods(ns).Get(context.Background(), "plain", metav1.GetOptions{}); err != nil {
			return false, err.Error()
		}
		cs := cur.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].ContainerID != "", clustertest.PodState(cur)
	})
	pid := pidOf(t, cur)
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(b), marker) {
		t.Errorf("container ID %s: process %d has command line %q (%v); want the container's", cur.Status.ContainerStatuses[0].ContainerID, pid, b, err)
	}
}

// processWith returns the pid of a process whose command line contains
// marker, or 0.
func processWith(marker string) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err == nil && strings.Contains(string(b), marker) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	return 0
}
