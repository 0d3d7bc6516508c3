package kubernetes_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// fakeCC records what the resolver reports. The resolver's behaviour
// against a real apiserver is proven in the e2e package; this covers the
// error paths a real cluster cannot easily produce.
type fakeCC struct {
	mu     sync.Mutex
	states []resolver.State
	errs   []error
}

func (f *fakeCC) UpdateState(s resolver.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = append(f.states, s)
	return nil
}
func (f *fakeCC) ReportError(err error)         { f.mu.Lock(); f.errs = append(f.errs, err); f.mu.Unlock() }
func (f *fakeCC) NewAddress([]resolver.Address) {}
func (f *fakeCC) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{}
}

func (f *fakeCC) last() (resolver.State, []error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s resolver.State
	if len(f.states) > 0 {
		s = f.states[len(f.states)-1]
	}
	return s, append([]error(nil), f.errs...)
}

func build(t *testing.T, b resolver.Builder, endpoint string) *fakeCC {
	t.Helper()
	cc := &fakeCC{}
	r, err := b.Build(resolver.Target{URL: url.URL{Scheme: "kubernetes", Path: "/" + endpoint}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return cc
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestResolverServiceAppearsLater(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset()
	cc := build(t, kuberesolver.NewBuilder(kuberesolver.WithClient(cs)), "example.default:grpc")
	eventually(t, "an error saying there are no EndpointSlices", func() bool {
		_, errs := cc.last()
		return len(errs) > 0 && strings.Contains(errs[0].Error(), "no EndpointSlices yet")
	})
	s := slice("example-abc", grpcPort, ready("198.18.0.1"), ready("198.18.0.2"))
	s.Namespace = "default"
	s.Labels = map[string]string{discoveryv1.LabelServiceName: "example"}
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 endpoints", func() bool {
		st, _ := cc.last()
		return len(st.Endpoints) == 2
	})
	// Another Service's slice is not ours.
	other := slice("other-x", grpcPort, ready("198.18.0.9"))
	other.Namespace = "default"
	other.Labels = map[string]string{discoveryv1.LabelServiceName: "other"}
	cs.DiscoveryV1().EndpointSlices("default").Create(context.Background(), other, metav1.CreateOptions{})
	time.Sleep(100 * time.Millisecond)
	if st, _ := cc.last(); len(st.Endpoints) != 2 {
		t.Errorf("endpoints = %d after another service's slice appeared, want 2", len(st.Endpoints))
	}
}

func TestResolverForbiddenNamesTheRBACRule(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset()
	cs.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"}, "", errors.New("RBAC: access denied"))
	})
	cc := build(t, kuberesolver.NewBuilder(kuberesolver.WithClient(cs)), "example.shop:grpc")
	eventually(t, "a forbidden error naming the rule", func() bool {
		_, errs := cc.last()
		for _, err := range errs {
			if strings.Contains(err.Error(), "get/list/watch on endpointslices.discovery.k8s.io in namespace shop") {
				return true
			}
		}
		return false
	})
}

func TestResolverRejectsBadTargets(t *testing.T) {
	t.Parallel()
	b := kuberesolver.NewBuilder(kuberesolver.WithClient(fake.NewClientset()))
	_, err := b.Build(resolver.Target{URL: url.URL{Scheme: "kubernetes", Path: "/example.default"}}, &fakeCC{}, resolver.BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "no port") {
		t.Errorf("Build without a port = %v, want an error saying so", err)
	}
	// An authority would read as a choice of cluster, which the resolver
	// cannot honour: it watches the cluster of its kubeconfig or pod.
	_, err = b.Build(resolver.Target{URL: url.URL{Scheme: "kubernetes", Host: "other-cluster", Path: "/example.default:grpc"}}, &fakeCC{}, resolver.BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), `authority "other-cluster"`) {
		t.Errorf("Build with an authority = %v, want an error naming it", err)
	}
}

// TestResolverNamesThePortsTheSlicesHave: a target whose port no slice
// lists (a Service port number where the pod's is meant, a misspelt
// name) is answered with the ports the slices do list. Before, the error
// said only that no endpoint had the port.
func TestResolverNamesThePortsTheSlicesHave(t *testing.T) {
	t.Parallel()
	s := slice("example-abc", append(grpcPort, discoveryv1.EndpointPort{Name: ptr("metrics"), Port: ptr(int32(9090))}), ready("198.18.0.1"))
	s.Namespace = "default"
	s.Labels = map[string]string{discoveryv1.LabelServiceName: "example"}
	for _, c := range []struct{ port, want string }{
		{"80", `port 80: the EndpointSlices list grpc=50051, metrics=9090 (a number is the pod's port, the Service's targetPort)`},
		{"gprc", `port "gprc": the EndpointSlices list grpc=50051, metrics=9090`},
	} {
		cc := build(t, kuberesolver.NewBuilder(kuberesolver.WithClient(fake.NewClientset(s))), "example.default:"+c.port)
		eventually(t, "an error naming the ports", func() bool {
			_, errs := cc.last()
			return len(errs) > 0 && strings.Contains(errs[len(errs)-1].Error(), c.want)
		})
	}
}
