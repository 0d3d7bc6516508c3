package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// pidOf returns the host pid of a pod's container, from its container ID.
func pidOf(t *testing.T, p *corev1.Pod) int {
	t.Helper()
	if len(p.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", p.Name)
	}
	id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "kuberpc://")
	pid, err := strconv.Atoi(id)
	if err != nil {
		t.Fatalf("pod %s container ID %q is not kuberpc://PID", p.Name, p.Status.ContainerStatuses[0].ContainerID)
	}
	return pid
}

func TestDeploymentServesFromEveryPod(t *testing.T) {
	ns := env.Namespace(t)
	pods := env.DeployExample(t, ns, 3, "kuberpc.local/example:v1")

	hostNet, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	ips, netns := map[string]bool{}, map[string]bool{}
	for _, p := range pods {
		ips[p.Status.PodIP] = true
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pidOf(t, &p)))
		if err != nil {
			t.Fatal(err)
		}
		if ns == hostNet {
			t.Errorf("pod %s runs in the host network namespace", p.Name)
		}
		netns[ns] = true
	}
	if len(ips) != 3 || len(netns) != 3 {
		t.Fatalf("want 3 distinct pod IPs in 3 network namespaces, got IPs %v, namespaces %v", ips, netns)
	}

	clustertest.WaitFor(t, 30*time.Second, "EndpointSlice with the 3 pod IPs ready", func() (bool, string) {
		eps := env.Endpoints(t, ns, "example")
		for ip := range ips {
			if !clustertest.IsTrue(eps[ip].Ready) {
				return false, fmt.Sprint(eps)
			}
		}
		return len(eps) == 3, fmt.Sprint(eps)
	})
	for ip := range ips {
		msg, err := sayHello(t, ip, "pod-"+ip)
		if err != nil {
			t.Errorf("SayHello on %s: %v", ip, err)
		} else if msg != "Hello, pod-"+ip+"!" {
			t.Errorf("SayHello on %s = %q", ip, msg)
		}
	}

	// kubectl logs reaches the node agent through the apiserver.
	out := env.Kubectl(t, ns, "", "logs", pods[0].Name)
	if !strings.Contains(out, "serving gRPC") {
		t.Errorf("kubectl logs %s = %q, want the server's start line", pods[0].Name, out)
	}
}

func TestScaleRolloutSetImageUndo(t *testing.T) {
	ns := env.Namespace(t)
	rec := recordSlices(t, ns)
	first := env.DeployExample(t, ns, 3, "kuberpc.local/example:v1")

	env.Kubectl(t, ns, "", "scale", "deployment/example", "--replicas=4")
	pods := env.WaitReady(t, ns, "app=example", 4)
	clustertest.WaitFor(t, 30*time.Second, "4 ready endpoints", func() (bool, string) {
		n := 0
		eps := env.Endpoints(t, ns, "example")
		for _, c := range eps {
			if clustertest.IsTrue(c.Ready) {
				n++
			}
		}
		return n == 4, fmt.Sprint(eps)
	})

	env.Kubectl(t, ns, "", "rollout", "restart", "deployment/example")
	env.Kubectl(t, ns, "", "rollout", "status", "deployment/example", "--timeout=120s")
	restarted := env.WaitReady(t, ns, "app=example", 4)
	old := map[string]bool{}
	for _, p := range pods {
		old[p.Name] = true
	}
	for _, p := range restarted {
		if old[p.Name] {
			t.Errorf("pod %s survived rollout restart", p.Name)
		}
	}
	// A replaced pod went through terminating while its server drained:
	// not ready, terminating, and serving until its health turned
	// NOT_SERVING.
	oldIP := first[0].Status.PodIP
	clustertest.WaitFor(t, 10*time.Second, "terminating conditions recorded", func() (bool, string) {
		return rec.saw(oldIP, "ready=false,serving=true,terminating=true") ||
			rec.saw(oldIP, "ready=false,serving=false,terminating=true"), rec.String()
	})
	t.Logf("conditions seen for %s: %v", oldIP, rec.seen[oldIP])
	clustertest.WaitFor(t, 30*time.Second, "EndpointSlice with only the new pods", func() (bool, string) {
		eps := env.Endpoints(t, ns, "example")
		for _, p := range restarted {
			if !clustertest.IsTrue(eps[p.Status.PodIP].Ready) {
				return false, fmt.Sprint(eps)
			}
		}
		return len(eps) == 4, fmt.Sprint(eps)
	})

	env.Kubectl(t, ns, "", "set", "image", "deployment/example", "server=kuberpc.local/example:v2")
	env.Kubectl(t, ns, "", "rollout", "status", "deployment/example", "--timeout=120s")
	for _, p := range env.WaitReady(t, ns, "app=example", 4) {
		if img := p.Spec.Containers[0].Image; img != "kuberpc.local/example:v2" {
			t.Errorf("after set image, pod %s runs %s", p.Name, img)
		}
	}

	env.Kubectl(t, ns, "", "rollout", "undo", "deployment/example")
	env.Kubectl(t, ns, "", "rollout", "status", "deployment/example", "--timeout=120s")
	for _, p := range env.WaitReady(t, ns, "app=example", 4) {
		if img := p.Spec.Containers[0].Image; img != "kuberpc.local/example:v1" {
			t.Errorf("after rollout undo, pod %s runs %s", p.Name, img)
		}
		if msg, err := sayHello(t, p.Status.PodIP, "undo"); err != nil || msg != "Hello, undo!" {
			t.Errorf("SayHello on %s after undo: %q, %v", p.Status.PodIP, msg, err)
		}
	}
}

func TestKilledProcessRestarts(t *testing.T) {
	ns := env.Namespace(t)
	rec := recordSlices(t, ns)
	pods := env.DeployExample(t, ns, 1, "kuberpc.local/example:v1")
	p := pods[0]
	ip := p.Status.PodIP
	clustertest.WaitFor(t, 10*time.Second, "the endpoint ready", func() (bool, string) {
		return rec.saw(ip, "ready=true,serving=true,terminating=false"), rec.String()
	})
	rec.reset()
	if err := syscall.Kill(pidOf(t, &p), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 60*time.Second, "restartCount 1 and ready again", func() (bool, string) {
		cur, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), p.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cs := cur.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].RestartCount == 1 && clustertest.IsReady(cur), clustertest.PodState(cur)
	})
	clustertest.WaitFor(t, 10*time.Second, "endpoint not ready, then ready again", func() (bool, string) {
		return rec.saw(ip, "ready=false,serving=false,terminating=false") && clustertest.IsTrue(env.Endpoints(t, ns, "example")[ip].Ready), rec.String()
	})
	cur, _ := env.Client.CoreV1().Pods(ns).Get(context.Background(), p.Name, metav1.GetOptions{})
	if last := cur.Status.ContainerStatuses[0].LastTerminationState.Terminated; last == nil || last.ExitCode != 137 {
		t.Errorf("lastState = %+v, want terminated with exit code 137 (SIGKILL)", cur.Status.ContainerStatuses[0].LastTerminationState)
	}

	// Each run has its log: --previous is the killed one's, and
	// --timestamps prefixes every line with when it was written.
	now := env.Kubectl(t, ns, "", "logs", p.Name)
	prev := env.Kubectl(t, ns, "", "logs", "--previous", p.Name)
	if strings.Count(now, "serving gRPC") != 1 || strings.Count(prev, "serving gRPC") != 1 {
		t.Errorf("want one start line in each run's log; current:\n%s\nprevious:\n%s", now, prev)
	}
	stamped := env.Kubectl(t, ns, "", "logs", "--timestamps", p.Name)
	for _, line := range strings.Split(strings.TrimSpace(stamped), "\n") {
		ts, _, _ := strings.Cut(line, " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(at) > 5*time.Minute {
			t.Errorf("kubectl logs --timestamps line %q: want a recent RFC 3339 time first (%v)", line, err)
		}
	}
	// The agent records what the kubelet would: kubectl describe says
	// why the pod restarted.
	clustertest.WaitFor(t, 10*time.Second, "Started twice and BackOff in the pod's events", func() (bool, string) {
		ev := env.Kubectl(t, ns, "", "get", "events", "--field-selector", "involvedObject.name="+p.Name,
			"-o", "custom-columns=REASON:.reason,COUNT:.count,SOURCE:.source.component,MESSAGE:.message", "--no-headers")
		started := false
		for _, line := range strings.Split(ev, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "Started" && f[1] == "2" && f[2] == "kubelet" {
				started = true
			}
		}
		return started && strings.Contains(ev, "BackOff") && strings.Contains(ev, "Back-off restarting failed container server"), ev
	})
}

// TestNodeAgentRestartAdoptsPods: the node agent restarted (as a kubelet
// is upgraded) leaves its pods running, and the new one adopts them: same
// processes, no restart, still Ready and serving; it then watches them as
// its own, restarting a killed process with the exit code its monitor
// recorded, and stopping a deleted pod with its grace period.
func TestNodeAgentRestartAdoptsPods(t *testing.T) {
	ns := env.Namespace(t)
	pods := env.DeployExample(t, ns, 2, "kuberpc.local/example:v1")
	before := map[string]string{}
	for _, p := range pods {
		before[p.Name] = p.Status.ContainerStatuses[0].ContainerID
	}
	if err := env.Cluster.Restart(context.Background(), "node-agent"); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if err := syscall.Kill(pidOf(t, &p), 0); err != nil {
			t.Errorf("pod %s's process is gone after the agent restarted: %v", p.Name, err)
		}
		msg, err := sayHello(t, p.Status.PodIP, "adopted")
		if err != nil || msg != "Hello, adopted!" {
			t.Errorf("SayHello on %s after the agent restarted = %q, %v", p.Status.PodIP, msg, err)
		}
	}
	// The new agent reports the adopted pods (it logs each adoption) and
	// probes them: still Ready, same container, no restart.
	clustertest.WaitFor(t, 30*time.Second, "the new agent to adopt both pods", func() (bool, string) {
		b, _ := os.ReadFile(env.Cluster.LogFile("node-agent"))
		n := 0
		for _, p := range pods {
			if strings.Contains(string(b[max(0, len(b)-200_000):]), "pod adopted\" node=kuberpc-node pod="+ns+"/"+p.Name) {
				n++
			}
		}
		return n == 2, fmt.Sprintf("%d adopted", n)
	})
	for _, p := range pods {
		cur, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cs := cur.Status.ContainerStatuses[0]
		if cur.UID != p.UID || cs.ContainerID != before[p.Name] || cs.RestartCount != 0 || !clustertest.IsReady(cur) {
			t.Errorf("pod %s after the restart: uid %s (was %s), container %s (was %s), restarts %d, %s",
				p.Name, cur.UID, p.UID, cs.ContainerID, before[p.Name], cs.RestartCount, clustertest.PodState(cur))
		}
	}

	// An adopted process that dies is restarted, with the exit code its
	// monitor recorded.
	victim := pods[0]
	vpid := pidOf(t, &victim)
	if err := syscall.Kill(vpid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	cur := waitContainer(t, ns, victim.Name, "the adopted process restarted after SIGKILL", func(cs corev1.ContainerStatus, p *corev1.Pod) bool {
		last := cs.LastTerminationState.Terminated
		return cs.RestartCount == 1 && cs.Ready && last != nil
	})
	if last := cur.Status.ContainerStatuses[0].LastTerminationState.Terminated; last.ExitCode != 137 {
		t.Errorf("adopted process killed: lastState %+v, want exit code 137", last)
	}

	// A deleted adopted pod drains and goes; while it drains (DRAIN_DELAY
	// 2s, NOT_SERVING at once) it reports READY 0/1, as kubectl shows.
	other := pods[1]
	env.Kubectl(t, ns, "", "delete", "pod", other.Name, "--wait=false")
	clustertest.WaitFor(t, 10*time.Second, "the terminating pod not ready while it drains", func() (bool, string) {
		cur, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), other.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cs := cur.Status.ContainerStatuses
		return cur.DeletionTimestamp != nil && len(cs) == 1 && !cs[0].Ready && cs[0].State.Running != nil, clustertest.PodState(cur)
	})
	env.Kubectl(t, ns, "", "wait", "--for=delete", "pod/"+other.Name, "--timeout=60s")
	if err := syscall.Kill(pidOf(t, &other), 0); err == nil {
		t.Errorf("pod %s deleted, its process still runs", other.Name)
	}
}

// waitContainer waits until the pod's container status satisfies cond.
func waitContainer(t *testing.T, ns, pod, what string, cond func(corev1.ContainerStatus, *corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var cur *corev1.Pod
	clustertest.WaitFor(t, 60*time.Second, what, func() (bool, string) {
		var err error
		cur, err = env.Client.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, cs := range cur.Status.ContainerStatuses {
			if cond(cs, cur) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", cur.Status.ContainerStatuses)
	})
	return cur
}

func TestBadPodsGetClearStatus(t *testing.T) {
	ns := env.Namespace(t)
	env.Kubectl(t, ns, `apiVersion: v1
kind: Pod
metadata: {name: unknown-image}
spec:
  containers:
  - {name: c, image: kuberpc.local/no-such-image:v9}
---
apiVersion: v1
kind: Pod
metadata: {name: port-in-use}
spec:
  containers:
  - {name: a, image: kuberpc.local/example:v1, env: [{name: METRICS_PORT, value: "9090"}]}
  - {name: b, image: kuberpc.local/example:v1, env: [{name: METRICS_PORT, value: "9091"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: bad-probe}
spec:
  containers:
  - name: c
    image: kuberpc.local/example:v1
    readinessProbe:
      httpGet: {path: /readyz, port: no-such-port}
      periodSeconds: 1
`, "apply", "-f", "-")

	waitContainer(t, ns, "unknown-image", "ErrImagePull/ImagePullBackOff naming the image", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool {
		w := cs.State.Waiting
		return w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") &&
			strings.Contains(w.Message, "kuberpc.local/no-such-image:v9") && strings.Contains(w.Message, "kuberpc image")
	})
	waitContainer(t, ns, "port-in-use", "the second container failing on the taken port", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool {
		last := cs.LastTerminationState.Terminated
		return last != nil && last.ExitCode != 0 && strings.Contains(last.Message, "address already in use") && strings.Contains(last.Message, "PORT")
	})
	p := waitContainer(t, ns, "bad-probe", "not ready with the probe's error", func(cs corev1.ContainerStatus, p *corev1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, `"no-such-port"`) {
				return cs.State.Running != nil
			}
		}
		return false
	})
	t.Logf("bad-probe Ready condition: %+v", p.Status.Conditions)

	// A missing binary: the image is registered, its executable is not there.
	store := env.Images()
	if err := writeImage(store, "kuberpc.local/vanished:v1", "/bin/true"); err != nil {
		t.Fatal(err)
	}
	if err := rewriteEntrypoint(store, "kuberpc.local/vanished:v1", "/nonexistent/kuberpc-server"); err != nil {
		t.Fatal(err)
	}
	env.Kubectl(t, ns, "", "run", "vanished", "--image=kuberpc.local/vanished:v1", "--restart=Never")
	waitContainer(t, ns, "vanished", "RunContainerError naming the executable", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool {
		w := cs.State.Waiting
		return w != nil && w.Reason == "RunContainerError" && strings.Contains(w.Message, "/nonexistent/kuberpc-server")
	})

	// The node agent survived all of it.
	nodes, err := env.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v, %v", nodes, err)
	}
	env.DeployExample(t, ns, 1, "kuberpc.local/example:v1")
}

func TestInClusterClientUsesProjectedToken(t *testing.T) {
	ns := env.Namespace(t)
	// kubectl inside a pod with no kubeconfig uses rest.InClusterConfig:
	// KUBERNETES_SERVICE_HOST/PORT and the token, CA and namespace at
	// /var/run/secrets/kubernetes.io/serviceaccount.
	env.Kubectl(t, ns, "", "run", "whoami", "--image=kuberpc.local/kubectl:v1", "--restart=Never", "--", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	waitContainer(t, ns, "whoami", "kubectl auth whoami to finish", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool {
		return cs.State.Terminated != nil
	})
	out := env.Kubectl(t, ns, "", "logs", "whoami")
	if want := "system:serviceaccount:" + ns + ":default"; !strings.Contains(out, want) {
		t.Errorf("in-pod kubectl auth whoami printed %q, want %q", out, want)
	}
	if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token"); err == nil {
		t.Error("the pod's token is visible on the host; it must be in the pod's mount namespace only")
	}
}

func TestPythonServerImage(t *testing.T) {
	ns := env.Namespace(t)
	env.Kubectl(t, ns, `apiVersion: v1
kind: Pod
metadata: {name: py, labels: {app: py}}
spec:
  containers:
  - name: server
    image: kuberpc.local/example-python:v1
    env: [{name: DRAIN_DELAY, value: "0.5"}]
    readinessProbe:
      grpc: {port: 50051, service: example.ExampleService}
      periodSeconds: 1
`, "apply", "-f", "-")
	pods := env.WaitReady(t, ns, "app=py", 1)
	msg, err := sayHello(t, pods[0].Status.PodIP, "python pod")
	if err != nil || msg != "Hello, python pod!" {
		t.Errorf("SayHello on the Python pod: %q, %v", msg, err)
	}
}

// TestClusterIPThroughKubeProxy calls the example Service's ClusterIP from
// the host: the real kube-proxy (nftables mode) DNATs it to the pods.
func TestClusterIPThroughKubeProxy(t *testing.T) {
	ns := env.Namespace(t)
	pods := env.DeployExample(t, ns, 2, "kuberpc.local/example:v1")
	svc, err := env.Client.CoreV1().Services(ns).Get(context.Background(), "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := svc.Spec.ClusterIP
	if err := podnet.CheckViaBridge(podnet.Default, net.ParseIP(ip)); err != nil {
		t.Fatalf("refusing to send traffic to ClusterIP %s: %v", ip, err)
	}
	want := map[string]bool{}
	for _, p := range pods {
		want[p.Status.PodIP] = true
	}
	clustertest.WaitFor(t, 30*time.Second, "SayHello through ClusterIP "+ip, func() (bool, string) {
		msg, err := sayHelloAt(net.JoinHostPort(ip, "50051"), "clusterip")
		return err == nil && msg == "Hello, clusterip!", fmt.Sprint(msg, err)
	})
	for i := range 10 {
		if msg, err := sayHelloAt(net.JoinHostPort(ip, "50051"), fmt.Sprint("c", i)); err != nil || msg != fmt.Sprintf("Hello, c%d!", i) {
			t.Errorf("call %d through ClusterIP: %q, %v", i, msg, err)
		}
	}
}
