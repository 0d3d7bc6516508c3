package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// namespace creates a namespace for one test and deletes it afterwards.
func namespace(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name := "e2e-" + strings.ToLower(strings.ReplaceAll(t.Name(), "_", "-"))
	if len(name) > 50 {
		name = name[:50]
	}
	name += "-" + hex.EncodeToString(b)
	_, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount controller creates "default" shortly after.
	waitFor(t, 30*time.Second, "default service account", func() (bool, string) {
		_, err := client.CoreV1().ServiceAccounts(name).Get(context.Background(), "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	t.Cleanup(func() {
		client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// kubectl runs the cluster's kubectl in ns and returns its output.
func kubectl(t *testing.T, ns string, stdin string, args ...string) string {
	t.Helper()
	out, err := kubectlErr(ns, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectlErr(ns, stdin string, args ...string) (string, error) {
	cmd := exec.Command(lc.Bin.Path("kubectl"), append([]string{"--kubeconfig", lc.Kubeconfig, "-n", ns}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitFor polls cond every 100ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
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

const exampleApp = `apiVersion: apps/v1
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

// deployExample applies the example Deployment and Service and waits for
// n ready pods.
func deployExample(t *testing.T, ns string, n int, image string) []corev1.Pod {
	t.Helper()
	kubectl(t, ns, fmt.Sprintf(exampleApp, n, image), "apply", "-f", "-")
	return waitReady(t, ns, "app=example", n)
}

// waitReady waits until exactly n pods match selector and all are Running
// and Ready, and returns them.
func waitReady(t *testing.T, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	waitFor(t, 90*time.Second, fmt.Sprintf("%d ready pods %s", n, selector), func() (bool, string) {
		list, err := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		pods = nil
		var states []string
		for _, p := range list.Items {
			states = append(states, p.Name+":"+podState(&p))
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && isReady(&p) {
				pods = append(pods, p)
			}
		}
		return len(pods) == n && len(list.Items) == n, strings.Join(states, ", ")
	})
	return pods
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podState(p *corev1.Pod) string {
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

// endpoints returns the endpoints of service in ns, merged over all its
// EndpointSlices, by address.
func endpoints(t *testing.T, ns, service string) map[string]discoveryv1.EndpointConditions {
	t.Helper()
	list, err := client.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
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

func isTrue(b *bool) bool { return b != nil && *b }

// sayHello calls SayHello on a pod address, after checking that the
// address is routed through the cluster's bridge.
func sayHello(t *testing.T, ip string, name string) (string, error) {
	t.Helper()
	if err := podnet.CheckRouted(podnet.Default, net.ParseIP(ip)); err != nil {
		t.Fatalf("refusing to send traffic to %s: %v", ip, err)
	}
	cc, err := grpc.NewClient(net.JoinHostPort(ip, "50051"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// example.Request{name = 2}, encoded by hand: this module does not
	// import the kuberpc module's generated code.
	req := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), name)
	var resp []byte
	if err := cc.Invoke(ctx, "/example.ExampleService/SayHello", &req, &resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		return "", err
	}
	// example.Response{message = 1}
	for len(resp) > 0 {
		num, typ, n := protowire.ConsumeTag(resp)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		resp = resp[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeString(resp)
			if n < 0 {
				return "", protowire.ParseError(n)
			}
			return v, nil
		}
		n = protowire.ConsumeFieldValue(num, typ, resp)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		resp = resp[n:]
	}
	return "", nil
}

// rawCodec passes already-encoded protobuf bytes through.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// sliceRecorder records every endpoint condition seen in a namespace's
// EndpointSlices, through an informer on the real apiserver.
type sliceRecorder struct {
	mu   sync.Mutex
	seen map[string]map[string]bool // address -> "ready=..,serving=..,terminating=.." seen
	stop chan struct{}
}

func recordSlices(t *testing.T, ns string) *sliceRecorder {
	r := &sliceRecorder{seen: map[string]map[string]bool{}, stop: make(chan struct{})}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	record := func(obj any) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, e := range s.Endpoints {
			c := fmt.Sprintf("ready=%v,serving=%v,terminating=%v", isTrue(e.Conditions.Ready), isTrue(e.Conditions.Serving), isTrue(e.Conditions.Terminating))
			for _, a := range e.Addresses {
				if r.seen[a] == nil {
					r.seen[a] = map[string]bool{}
				}
				r.seen[a][c] = true
			}
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: record, UpdateFunc: func(_, n any) { record(n) }})
	f.Start(r.stop)
	f.WaitForCacheSync(r.stop)
	t.Cleanup(func() { close(r.stop) })
	return r
}

// reset forgets what was seen so far.
func (r *sliceRecorder) reset() {
	r.mu.Lock()
	r.seen = map[string]map[string]bool{}
	r.mu.Unlock()
}

// saw reports whether address was seen with conditions c.
func (r *sliceRecorder) saw(address, c string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[address][c]
}

func (r *sliceRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.seen)
}
