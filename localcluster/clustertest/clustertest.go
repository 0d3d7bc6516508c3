// Package clustertest runs tests against the local cluster, started once
// per test package as controller-runtime's envtest does: Run brings the
// cluster up (or reuses one that is running), registers the example
// images, runs the tests, and stops the cluster when it started it,
// checking that nothing was left behind. Helpers create a namespace per
// test, run kubectl, and wait for pods and endpoints.
package clustertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kuberpc/kuberpc/examples/example/exampletest"
	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/localcluster/images"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
	"github.com/kuberpc/kuberpc/metricsadapter"
)

// agentCommand is the argument under which the test binary runs the node
// agent.
const agentCommand = "node-agent"

// adapterCommand is the argument under which the test binary runs the
// custom metrics adapter.
const adapterCommand = "metrics-adapter"

// IsNodeAgent reports whether the test binary was started as the
// cluster's node agent; Run then runs the agent, not the tests.
func IsNodeAgent() bool { return len(os.Args) > 1 && os.Args[1] == agentCommand }

// WorkloadCertTTL is the lifetime of the workload certificates of the
// test cluster's pods.
const WorkloadCertTTL = 3 * time.Second

// Env is the running cluster a test package shares.
type Env struct {
	Cluster *cluster.Cluster
	Client  kubernetes.Interface
	// Repo is the kuberpc checkout.
	Repo string
}

// Run starts (or reuses) the local cluster for the test binary m, whose
// working directory is repoRel below the kuberpc checkout (e.g.
// "localcluster/e2e"), registers the example images, runs the tests and
// returns the exit code. It needs root.
//
// The test binary is also the cluster's node agent: Run starts it as
// "TESTBINARY node-agent run ...", and when it finds itself started that
// way it runs the agent (nodeagent.Main) instead of the tests; likewise
// the custom metrics adapter ("TESTBINARY metrics-adapter ...").
func Run(m *testing.M, repoRel string, env **Env) int {
	if IsNodeAgent() {
		return nodeagent.Main([]string{agentCommand}, os.Args[2:])
	}
	if len(os.Args) > 1 && os.Args[1] == adapterCommand {
		return metricsadapter.Main(os.Args[2:])
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "clustertest: the local cluster needs root (network namespaces, bridge)")
		return 1
	}
	wd, _ := os.Getwd()
	up := strings.Repeat("../", strings.Count(filepath.Clean(repoRel), "/")+1)
	e := &Env{Repo: filepath.Clean(filepath.Join(wd, up))}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "clustertest:", err)
		return 1
	}
	// Workload certificates live 3 s (renewed every 2 s), so that tests
	// see them rotate many times under load; only pods that mount one
	// (kuberpc.yaml security) are issued any.
	opts := cluster.Options{Progress: os.Stderr, NodeAgent: []string{exe, agentCommand}, MetricsAdapter: []string{exe, adapterCommand},
		WorkloadCertTTL: WorkloadCertTTL}
	_, statusErr := cluster.Status(opts)
	startedHere := errors.Is(statusErr, cluster.ErrNotRunning)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if e.Cluster, err = cluster.Up(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "clustertest: cluster up:", err)
		if startedHere {
			cluster.Down(opts, false)
		}
		return 1
	}
	if e.Client, err = e.Cluster.Client(); err != nil {
		fmt.Fprintln(os.Stderr, "clustertest:", err)
		return 1
	}
	if err := e.registerImages(); err != nil {
		fmt.Fprintln(os.Stderr, "clustertest: images:", err)
		return 1
	}
	*env = e
	code := m.Run()
	if startedHere {
		if err := cluster.Down(opts, false); err != nil {
			fmt.Fprintln(os.Stderr, "clustertest: cluster down:", err)
			return 1
		}
		if err := CheckNothingLeft(); err != nil {
			fmt.Fprintln(os.Stderr, "clustertest: after cluster down:", err)
			return 1
		}
	}
	return code
}

// Images returns the cluster's image store.
func (e *Env) Images() images.Store { return images.Store{Dir: cluster.ImagesDir(e.Cluster.StateDir)} }

// registerImages builds the example server and registers the images the
// tests deploy.
func (e *Env) registerImages() error {
	binDir := filepath.Join(filepath.Dir(e.Cluster.StateDir), "e2e-bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	server := filepath.Join(binDir, "example-server")
	build := exec.Command("go", "build", "-o", server, "./examples/example/server")
	build.Dir = e.Repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build example server: %v\n%s", err, out)
	}
	imgs := []images.Image{
		{Ref: "kuberpc.local/example:v1", Entrypoint: []string{server}},
		{Ref: "kuberpc.local/example:v2", Entrypoint: []string{server}, Env: []string{"EXAMPLE_VERSION=v2"}},
		{Ref: "kuberpc.local/example-python:v1", Entrypoint: []string{"/usr/bin/python3", filepath.Join(e.Repo, "examples/example/python/server.py")}},
		{Ref: "kuberpc.local/example-python-plain:v1", Entrypoint: []string{"/usr/bin/python3", filepath.Join(e.Repo, "examples/example/python/plain_server.py")}},
		{Ref: "kuberpc.local/kubectl:v1", Entrypoint: []string{e.Cluster.Bin.Path("kubectl")}},
	}
	// The C++ and Java reference servers (built once, cached by their
	// sources' hash).
	for _, lang := range []string{"cpp", "java"} {
		progs, err := exampletest.Build(context.Background(), lang)
		if err != nil {
			return err
		}
		imgs = append(imgs, images.Image{Ref: "kuberpc.local/example-" + lang + ":v1", Entrypoint: progs.Server})
	}
	for _, img := range imgs {
		if err := e.Images().Put(img); err != nil {
			return err
		}
	}
	return nil
}

// CheckNothingLeft verifies that cluster down left no listener on the
// cluster's ports, no pod namespace and no bridge.
func CheckNothingLeft() error {
	var errs []error
	for _, port := range []int{cluster.APIServerPort, cluster.EtcdClientPort, cluster.EtcdPeerPort} {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond); err == nil {
			c.Close()
			errs = append(errs, fmt.Errorf("port %d still listening", port))
		}
	}
	// Pods outlive the node agent; cluster down stops their monitors.
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline")); err == nil && bytes.Contains(b, []byte("\x00pod-init\x00--netns=")) {
			errs = append(errs, fmt.Errorf("pod process %s left behind: %s", p.Name(), bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), podnet.NamespacePrefix) {
			errs = append(errs, fmt.Errorf("network namespace %s left behind", e.Name()))
		}
	}
	if out, err := exec.Command("nft", "list", "tables").Output(); err == nil && strings.Contains(string(out), "kube-proxy") {
		errs = append(errs, fmt.Errorf("kube-proxy's nftables tables left behind:\n%s", out))
	}
	if _, err := net.InterfaceByName(podnet.Default.Bridge); err == nil {
		errs = append(errs, fmt.Errorf("bridge %s left behind", podnet.Default.Bridge))
	}
	return errors.Join(errs...)
}

// Namespace creates a namespace for one test and deletes it afterwards.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name := "e2e-" + strings.ToLower(strings.ReplaceAll(t.Name(), "_", "-"))
	if len(name) > 50 {
		name = name[:50]
	}
	name += "-" + hex.EncodeToString(b)
	_, err := e.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount controller creates "default" shortly after.
	WaitFor(t, 30*time.Second, "default service account", func() (bool, string) {
		_, err := e.Client.CoreV1().ServiceAccounts(name).Get(context.Background(), "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	t.Cleanup(func() {
		e.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// Kubectl runs the cluster's kubectl in ns and returns its output.
func (e *Env) Kubectl(t testing.TB, ns string, stdin string, args ...string) string {
	t.Helper()
	out, err := e.KubectlErr(ns, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// KubectlErr is Kubectl returning the error.
func (e *Env) KubectlErr(ns, stdin string, args ...string) (string, error) {
	cmd := exec.Command(e.Cluster.Bin.Path("kubectl"), append([]string{"--kubeconfig", e.Cluster.Kubeconfig, "-n", ns}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// WaitFor polls cond every 100ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ExampleApp is the example Deployment and Service; format it with the
// replica count and the image.
const ExampleApp = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: example
spec:
  replicas: %d
  selector:
    matchLabels: {app: example}
  template:
    metadata:
      labels: {app: example}
    spec:
      terminationGracePeriodSeconds: 15
      containers:
      - name: server
        image: %s
        env:
        - {name: DRAIN_DELAY, value: 2s}
        - {name: DRAIN_TIMEOUT, value: 5s}
        - {name: LOG_LEVEL, value: info}
        ports:
        - {name: grpc, containerPort: 50051}
        - {name: metrics, containerPort: 9090}
        readinessProbe:
          grpc: {port: 50051}
          periodSeconds: 1
          failureThreshold: 1
        livenessProbe:
          httpGet: {path: /healthz, port: metrics}
          periodSeconds: 5
---
apiVersion: v1
kind: Service
metadata:
  name: example
spec:
  selector: {app: example}
  ports:
  - {name: grpc, port: 50051, targetPort: grpc, appProtocol: kubernetes.io/h2c}
`

// DeployExample applies the example Deployment and Service and waits for
// n ready pods.
func (e *Env) DeployExample(t testing.TB, ns string, n int, image string) []corev1.Pod {
	t.Helper()
	e.Kubectl(t, ns, fmt.Sprintf(ExampleApp, n, image), "apply", "-f", "-")
	return e.WaitReady(t, ns, "app=example", n)
}

// WaitReady waits until exactly n pods match selector and all are Running
// and Ready, and returns them.
func (e *Env) WaitReady(t testing.TB, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	WaitFor(t, 90*time.Second, fmt.Sprintf("%d ready pods %s", n, selector), func() (bool, string) {
		list, err := e.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		pods = nil
		var states []string
		for _, p := range list.Items {
			states = append(states, p.Name+":"+PodState(&p))
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && IsReady(&p) {
				pods = append(pods, p)
			}
		}
		return len(pods) == n && len(list.Items) == n, strings.Join(states, ", ")
	})
	return pods
}

// IsReady reports whether the pod's Ready condition is true.
func IsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodState summarises a pod's phase and containers for messages.
func PodState(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			s += "/" + w.Reason
		}
		s += fmt.Sprintf("/ready=%v/restarts=%d", cs.Ready, cs.RestartCount)
	}
	if p.DeletionTimestamp != nil {
		s += "/deleting"
	}
	return s
}

// Endpoints returns the endpoints of service in ns, merged over all its
// EndpointSlices, by address.
func (e *Env) Endpoints(t testing.TB, ns, service string) map[string]discoveryv1.EndpointConditions {
	t.Helper()
	list, err := e.Client.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]discoveryv1.EndpointConditions{}
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				out[a] = e.Conditions
			}
		}
	}
	return out
}

// IsTrue reads an optional condition.
func IsTrue(b *bool) bool { return b != nil && *b }

// GetRaw GETs path from the apiserver. Its error carries the Status
// message of the response (an aggregated API's Status, which the core
// client's decoder does not read), or the body.
func (e *Env) GetRaw(path string) ([]byte, error) {
	b, err := e.Client.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(context.Background())
	if err != nil {
		var st metav1.Status
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			return nil, fmt.Errorf("%w: %s", err, st.Message)
		}
		return nil, fmt.Errorf("%w: %s", err, b)
	}
	return b, nil
}

// CustomMetric reads metric for every pod of ns from
// custom.metrics.k8s.io, by pod name.
func (e *Env) CustomMetric(ns, metric string) (map[string]float64, error) {
	b, err := e.GetRaw("/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + ns + "/pods/*/" + metric)
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			DescribedObject struct{ Name string } `json:"describedObject"`
			Value           resource.Quantity     `json:"value"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, it := range list.Items {
		out[it.DescribedObject.Name] = it.Value.AsApproximateFloat64()
	}
	return out, nil
}
