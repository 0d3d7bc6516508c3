package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/localcluster/clustertest"
)

// pythonPod is a pod running a Python one-liner, with resources.
func pythonPod(name, code string, res corev1.ResourceRequirements) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers:                    []corev1.Container{{Name: "c", Image: "kuberpc.local/python:v1", Args: []string{"-c", code}, Resources: res}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func registerPython(t *testing.T) {
	t.Helper()
	if err := writeImage(env.Images(), "kuberpc.local/python:v1", "/usr/bin/python3"); err != nil {
		t.Fatal(err)
	}
}

func createPod(t *testing.T, ns string, p *corev1.Pod) {
	t.Helper()
	if _, err := env.Client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryLimitOOMKills: a process that outgrows its memory limit is
// killed by the kernel in its cgroup, reported OOMKilled (exit 137), and
// restarted with back-off.
func TestMemoryLimitOOMKills(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	createPod(t, ns, pythonPod("hog", "import time; x = b'x' * (300 << 20); time.sleep(600)", corev1.ResourceRequirements{
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("100Mi")},
	}))
	cur := waitContainer(t, ns, "hog", "OOMKilled, restarted, back-off", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool {
		last := cs.LastTerminationState.Terminated
		return last != nil && last.Reason == "OOMKilled" && cs.RestartCount >= 1
	})
	last := cur.Status.ContainerStatuses[0].LastTerminationState.Terminated
	if last.ExitCode != 137 {
		t.Errorf("OOMKilled with exit code %d; want 137", last.ExitCode)
	}
	// It keeps being killed, with a growing back-off in between.
	waitContainer(t, ns, "hog", "CrashLoopBackOff after repeated OOM kills", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool {
		return cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" && cs.RestartCount >= 2
	})
	ev := env.Kubectl(t, ns, "", "get", "events", "--field-selector", "involvedObject.name=hog,reason=OOMKilled", "-o", "name")
	if ev == "" {
		t.Errorf("no OOMKilled event for the pod")
	}
}

// summary is the node agent's /stats/summary, through the apiserver.
func summary(t *testing.T) statsv1alpha1.Summary {
	t.Helper()
	b, err := env.Client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + cluster.NodeName + "/proxy/stats/summary").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var s statsv1alpha1.Summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// cpuSeconds returns each pod's (of ns) CPU time, by name.
func cpuSeconds(t *testing.T, ns string) map[string]float64 {
	out := map[string]float64{}
	for _, p := range summary(t).Pods {
		if p.PodRef.Namespace == ns && p.CPU != nil && p.CPU.UsageCoreNanoSeconds != nil {
			out[p.PodRef.Name] = float64(*p.CPU.UsageCoreNanoSeconds) / 1e9
		}
	}
	return out
}

// TestCPULimitThrottles: two CPU burners side by side; the one limited to
// 200m gets about a fifth of a core (its CFS quota), the unlimited one
// the rest of a core.
func TestCPULimitThrottles(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	burn := "while True: pass"
	createPod(t, ns, pythonPod("limited", burn, corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")}}))
	createPod(t, ns, pythonPod("free", burn, corev1.ResourceRequirements{}))
	for _, name := range []string{"limited", "free"} {
		waitContainer(t, ns, name, name+" running", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool { return cs.State.Running != nil })
	}
	time.Sleep(2 * time.Second)
	before, start := cpuSeconds(t, ns), time.Now()
	time.Sleep(6 * time.Second)
	after, dt := cpuSeconds(t, ns), time.Since(start).Seconds()
	limited := (after["limited"] - before["limited"]) / dt
	free := (after["free"] - before["free"]) / dt
	t.Logf("cores used: limited (200m) %.3f, unlimited %.3f", limited, free)
	if limited > 0.25 || limited < 0.1 {
		t.Errorf("the pod limited to 200m used %.3f cores; want about 0.2 (at most 0.25)", limited)
	}
	if free < 0.6 {
		t.Errorf("the unlimited neighbour used %.3f cores; want most of a core", free)
	}
}

// TestPriorityPreemption: when the node's allocatable CPU is taken by a
// low-priority pod, a high-priority pod that does not fit makes the real
// scheduler preempt the low one, and then runs.
func TestPriorityPreemption(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	ctx := context.Background()
	for name, v := range map[string]int32{ns + "-low": 100, ns + "-high": 1000000} {
		pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: v}
		if _, err := env.Client.SchedulingV1().PriorityClasses().Create(ctx, pc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { env.Client.SchedulingV1().PriorityClasses().Delete(ctx, name, metav1.DeleteOptions{}) })
	}
	// What is left of the node's CPU, all of which the low pod asks for.
	node, err := env.Client.CoreV1().Nodes().Get(ctx, cluster.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	free := node.Status.Allocatable.Cpu().MilliValue()
	pods, err := env.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + cluster.NodeName})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, c := range p.Spec.Containers {
			free -= c.Resources.Requests.Cpu().MilliValue()
		}
	}
	if free < 200 {
		t.Fatalf("only %dm CPU free on the node", free)
	}
	ask := corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: *resource.NewMilliQuantity(free-50, resource.DecimalSI)}}
	sleep := "import time; time.sleep(600)"
	low := pythonPod("low", sleep, ask)
	low.Spec.PriorityClassName = ns + "-low"
	createPod(t, ns, low)
	waitContainer(t, ns, "low", "the low-priority pod running", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool { return cs.State.Running != nil })
	high := pythonPod("high", sleep, ask)
	high.Spec.PriorityClassName = ns + "-high"
	createPod(t, ns, high)
	waitContainer(t, ns, "high", "the high-priority pod running", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool { return cs.State.Running != nil })
	clustertest.WaitFor(t, 30*time.Second, "the low-priority pod preempted", func() (bool, string) {
		p, err := env.Client.CoreV1().Pods(ns).Get(ctx, "low", metav1.GetOptions{})
		if err != nil {
			return true, "" // deleted
		}
		return p.DeletionTimestamp != nil, fmt.Sprint(clustertest.PodState(p))
	})
}

// TestResourceMetricsAPI: metrics-server, registered through the
// aggregation layer, serves metrics.k8s.io from the node agent's
// /metrics/resource: kubectl top shows a CPU burner limited to 500m at
// about half a core, and the node's usage.
func TestResourceMetricsAPI(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	createPod(t, ns, pythonPod("burner", "while True: pass", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}}))
	waitContainer(t, ns, "burner", "burner running", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool { return cs.State.Running != nil })
	var out string
	clustertest.WaitFor(t, 90*time.Second, "kubectl top pod to show the burner at about 500m", func() (bool, string) {
		var err error
		out, err = env.KubectlErr(ns, "", "top", "pod", "burner", "--no-headers")
		if err != nil {
			return false, out
		}
		f := strings.Fields(out)
		if len(f) < 3 || !strings.HasSuffix(f[1], "m") {
			return false, out
		}
		m, err := strconv.Atoi(strings.TrimSuffix(f[1], "m"))
		return err == nil && m >= 350 && m <= 550, out
	})
	t.Logf("kubectl top pod: %s", out)
	if out, err := env.KubectlErr("", "", "top", "node", "--no-headers"); err != nil || !strings.HasPrefix(out, cluster.NodeName) {
		t.Errorf("kubectl top node: %v\n%s", err, out)
	}
}

// TestResourceFieldRefAsTheKubeletGivesIt: environment variables from the
// downward API's resourceFieldRef hold what the kubelet puts there: the
// quantity divided by the divisor and rounded up (bytes for memory, so a
// Go server's GOMEMLIMIT can take limits.memory as is), and the node's
// allocatable amount for a limit the container leaves unset. The agent
// gave "64Mi", ignored divisors and gave "0" for an unset limit.
func TestResourceFieldRefAsTheKubeletGivesIt(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	p := pythonPod("env", "import os, json, time; print(json.dumps({k: os.environ[k] for k in ('REQ_MEM', 'LIM_CPU_M', 'LIM_MEM')}), flush=True); time.sleep(600)",
		corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("100m")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
		})
	field := func(name, res, divisor string) corev1.EnvVar {
		fs := &corev1.ResourceFieldSelector{Resource: res}
		if divisor != "" {
			fs.Divisor = resource.MustParse(divisor)
		}
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: fs}}
	}
	p.Spec.Containers[0].Env = []corev1.EnvVar{field("REQ_MEM", "requests.memory", ""), field("LIM_CPU_M", "limits.cpu", "1m"), field("LIM_MEM", "limits.memory", "")}
	createPod(t, ns, p)
	waitContainer(t, ns, "env", "running", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool { return cs.State.Running != nil })
	var got map[string]string
	clustertest.WaitFor(t, 30*time.Second, "the pod's output", func() (bool, string) {
		out, err := env.KubectlErr(ns, "", "logs", "env")
		return err == nil && json.Unmarshal([]byte(out), &got) == nil, out
	})
	node, err := env.Client.CoreV1().Nodes().Get(context.Background(), cluster.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"REQ_MEM": "67108864", "LIM_CPU_M": "250", "LIM_MEM": strconv.FormatInt(node.Status.Allocatable.Memory().Value(), 10)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}
