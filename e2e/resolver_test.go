package e2e

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/localcluster/clustertest"
	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// dial connects to the example Service in ns through the kubernetes
// resolver, with the cluster's kubeconfig as a laptop would, and opts.
func dial(t *testing.T, ns string, opts ...client.Option) *grpc.ClientConn {
	t.Helper()
	cc, err := client.Dial(fmt.Sprintf("kubernetes:///example.%s:grpc", ns), append([]client.Option{
		client.WithRegistry(prometheus.NewRegistry()),
		client.WithIdempotentMethods("example.ExampleService/SayHello"),
		client.WithDialOptions(grpc.WithResolvers(kuberesolver.NewBuilder(kuberesolver.WithKubeconfig(env.Cluster.Kubeconfig))))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// peerLog records, per pod address, how many calls it answered and when
// it answered first and last.
type peerLog struct {
	mu          sync.Mutex
	count       map[string]int
	first, last map[string]time.Time
	failures    int
}

func newPeerLog() *peerLog {
	return &peerLog{count: map[string]int{}, first: map[string]time.Time{}, last: map[string]time.Time{}}
}

func (l *peerLog) call(ctx context.Context, c example.ExampleServiceClient) {
	var p peer.Peer
	_, err := c.SayHello(ctx, &example.Request{Name: "e2e"}, grpc.Peer(&p))
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			l.failures++
		}
		return
	}
	ip := p.Addr.String()
	ip = ip[:len(ip)-len(":50051")]
	if _, ok := l.first[ip]; !ok {
		l.first[ip] = now
	}
	l.last[ip] = now
	l.count[ip]++
}

// load calls SayHello from conc goroutines until ctx ends or max calls.
func (l *peerLog) load(ctx context.Context, c example.ExampleServiceClient, conc, max int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < max/conc && ctx.Err() == nil; i++ {
				l.call(ctx, c)
			}
		}()
	}
	return &wg
}

func TestRoundRobinAcrossPods(t *testing.T) {
	ns := env.Namespace(t)
	pods := env.DeployExample(t, ns, 3, "kuberpc.local/example:v1")
	c := example.NewExampleServiceClient(dial(t, ns))
	// The shares measure the policy once the client has every Ready pod
	// connected (Ready pods reach the EndpointSlice and the client a few
	// hundred ms apart: one pod answered none of 3000 calls made at once).
	warm := newPeerLog()
	for deadline := time.Now().Add(30 * time.Second); len(warm.count) < len(pods); {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s the client reached only %v of %d pods", warm.count, len(pods))
		}
		warm.call(context.Background(), c)
		time.Sleep(5 * time.Millisecond)
	}
	log := newPeerLog()
	log.load(context.Background(), c, 6, 3000).Wait()
	if log.failures > 0 {
		t.Errorf("%d calls failed", log.failures)
	}
	for _, p := range pods {
		n := log.count[p.Status.PodIP]
		if math.Abs(float64(n)-1000) > 100 {
			t.Errorf("pod %s (%s) answered %d of 3000 calls, want 1000 ± 10%%", p.Name, p.Status.PodIP, n)
		}
	}
	t.Logf("calls per pod: %v", log.count)
}

// sliceEvents watches the Service's EndpointSlices and reports, per
// address, when it was first seen ready and first seen terminating.
type sliceEvents struct {
	mu                 sync.Mutex
	ready, terminating map[string]time.Time
}

func watchSlices(t *testing.T, ns string) *sliceEvents {
	t.Helper()
	w, err := env.Client.DiscoveryV1().EndpointSlices(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	ev := &sliceEvents{ready: map[string]time.Time{}, terminating: map[string]time.Time{}}
	go func() {
		for e := range w.ResultChan() {
			now := time.Now()
			s, ok := e.Object.(*discoveryv1.EndpointSlice)
			if !ok || e.Type == watch.Deleted {
				continue
			}
			ev.mu.Lock()
			for _, ep := range s.Endpoints {
				for _, a := range ep.Addresses {
					if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
						if _, seen := ev.ready[a]; !seen {
							ev.ready[a] = now
						}
					}
					if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
						if _, seen := ev.terminating[a]; !seen {
							ev.terminating[a] = now
						}
					}
				}
			}
			ev.mu.Unlock()
		}
	}()
	return ev
}

func (e *sliceEvents) get(m map[string]time.Time, a string) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := m[a]
	return t, ok
}

func TestScaleUpAndTermination(t *testing.T) {
	ns := env.Namespace(t)
	pods := env.DeployExample(t, ns, 3, "kuberpc.local/example:v1")
	events := watchSlices(t, ns)
	c := example.NewExampleServiceClient(dial(t, ns))
	log := newPeerLog()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wg := log.load(ctx, c, 4, 400000)
	defer wg.Wait()
	defer cancel()
	time.Sleep(500 * time.Millisecond)

	// Scale up: the new pod takes traffic within a second of turning ready.
	env.Kubectl(t, ns, "", "scale", "deployment/example", "--replicas=4")
	all := env.WaitReady(t, ns, "app=example", 4)
	old := map[string]bool{}
	for _, p := range pods {
		old[p.Status.PodIP] = true
	}
	var newIP string
	for _, p := range all {
		if !old[p.Status.PodIP] {
			newIP = p.Status.PodIP
		}
	}
	var readyAt, firstCall time.Time
	clustertest.WaitFor(t, 10*time.Second, "the new pod "+newIP+" to answer", func() (bool, string) {
		var ok1, ok2 bool
		readyAt, ok1 = events.get(events.ready, newIP)
		log.mu.Lock()
		firstCall, ok2 = log.first[newIP]
		log.mu.Unlock()
		return ok1 && ok2, fmt.Sprintf("ready event %v, answered %v", ok1, ok2)
	})
	lag := firstCall.Sub(readyAt)
	t.Logf("new pod %s: ready in EndpointSlice → first call answered: %v", newIP, lag)
	if lag > time.Second {
		t.Errorf("the new pod took %v after turning ready to get traffic, want < 1s", lag)
	}

	// Termination: once the pod is terminating, no new call reaches it.
	victim := pods[0]
	if err := env.Client.CoreV1().Pods(ns).Delete(context.Background(), victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ip := victim.Status.PodIP
	var termAt time.Time
	clustertest.WaitFor(t, 10*time.Second, "the pod to be terminating", func() (bool, string) {
		var ok bool
		termAt, ok = events.get(events.terminating, ip)
		return ok, "no terminating event yet"
	})
	time.Sleep(1500 * time.Millisecond) // the server still serves for DRAIN_DELAY=2s
	log.mu.Lock()
	lastCall := log.last[ip]
	failures := log.failures
	log.mu.Unlock()
	after := lastCall.Sub(termAt)
	t.Logf("terminating pod %s: last call answered %v after the terminating event", ip, after)
	if after > 500*time.Millisecond {
		t.Errorf("the terminating pod answered calls %v after it was marked terminating, want none after the update", after)
	}
	if failures > 0 {
		t.Errorf("%d calls failed during scale-up and termination", failures)
	}
}
