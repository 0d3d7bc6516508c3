package kubernetes_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/resolver"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

func createSlice(t *testing.T, cs *fake.Clientset, ns, svc string, ips ...string) {
	t.Helper()
	var eps []ep
	for _, ip := range ips {
		eps = append(eps, ready(ip))
	}
	s := slice(svc+"-abc", grpcPort, eps...)
	s.Namespace = ns
	s.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestResolversShareOneWatch: resolvers of one Service (several Dials,
// another port) share one list and one watch, which stops with the last.
// Not parallel: it counts the process's watches.
func TestResolversShareOneWatch(t *testing.T) {
	cs := fake.NewClientset()
	var lists, watches atomic.Int32
	cs.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		return false, nil, nil
	})
	cs.PrependWatchReactor("endpointslices", func(k8stesting.Action) (bool, watch.Interface, error) {
		watches.Add(1)
		return false, nil, nil
	})
	createSlice(t, cs, "default", "shared", "198.18.0.1")
	before := kuberesolver.WatchCount()
	b := kuberesolver.NewBuilder(kuberesolver.WithClient(cs))
	var rs []resolver.Resolver
	var ccs []*fakeCC
	for _, target := range []string{"shared.default:grpc", "shared.default:grpc", "shared.default:50051"} {
		cc := &fakeCC{}
		r, err := b.Build(resolver.Target{URL: url.URL{Scheme: "kubernetes", Path: "/" + target}}, cc, resolver.BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rs, ccs = append(rs, r), append(ccs, cc)
	}
	for i, cc := range ccs {
		eventually(t, "endpoints for every resolver", func() bool {
			st, _ := cc.last()
			return len(st.Endpoints) == 1
		})
		_ = i
	}
	if n := kuberesolver.WatchCount() - before; n != 1 {
		t.Errorf("3 resolvers of one Service run %d watches; want 1", n)
	}
	if lists.Load() != 1 || watches.Load() != 1 {
		t.Errorf("the apiserver saw %d lists and %d watches; want 1 and 1", lists.Load(), watches.Load())
	}
	rs[0].Close()
	rs[1].Close()
	if n := kuberesolver.WatchCount() - before; n != 1 {
		t.Errorf("after 2 of 3 resolvers closed, %d watches; want 1", n)
	}
	rs[2].Close()
	if n := kuberesolver.WatchCount() - before; n != 0 {
		t.Errorf("after every resolver closed, %d watches; want 0", n)
	}
}

// TestWatchErrorsReachTheChannel: a failing watch is reported to the
// ClientConn even when endpoints are known (which the balancer keeps).
func TestWatchErrorsReachTheChannel(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset()
	createSlice(t, cs, "werr", "example", "198.18.0.1")
	var failing atomic.Bool
	cs.PrependWatchReactor("endpointslices", func(k8stesting.Action) (bool, watch.Interface, error) {
		if failing.Load() {
			return true, nil, errors.New("apiserver went away")
		}
		return false, nil, nil
	})
	// The first watch fails at once after the list; every later one too.
	failing.Store(true)
	cc := build(t, kuberesolver.NewBuilder(kuberesolver.WithClient(cs)), "example.werr:grpc")
	eventually(t, "endpoints, then the watch error reported", func() bool {
		st, errs := cc.last()
		for _, err := range errs {
			if len(st.Endpoints) == 1 && strings.Contains(err.Error(), "apiserver went away") && strings.Contains(err.Error(), "werr/example") {
				return true
			}
		}
		return false
	})
}

// TestClientCreationIsRetried: a Build that fails because the kubeconfig
// is not there yet does not poison later Builds.
func TestClientCreationIsRetried(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a pod
	path := filepath.Join(t.TempDir(), "kubeconfig")
	b := kuberesolver.NewBuilder(kuberesolver.WithKubeconfig(path))
	target := resolver.Target{URL: url.URL{Scheme: "kubernetes", Path: "/example.default:grpc"}}
	if _, err := b.Build(target, &fakeCC{}, resolver.BuildOptions{}); err == nil || !strings.Contains(err.Error(), "kubeconfig") {
		t.Fatalf("Build without a kubeconfig = %v; want an error naming the kubeconfig", err)
	}
	kc := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n" +
		"contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {token: t}}]\n"
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := b.Build(target, &fakeCC{}, resolver.BuildOptions{})
	if err != nil {
		t.Fatalf("Build after the kubeconfig appeared: %v", err)
	}
	r.Close()
}

// TestMetricsForgetAServiceNobodyResolves: the per-service series go when
// the last resolver of the service closes.
func TestMetricsForgetAServiceNobodyResolves(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset()
	createSlice(t, cs, "gone", "example", "198.18.0.1")
	reg := prometheus.NewRegistry()
	m, err := kuberesolver.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cc := &fakeCC{}
	r, err := kuberesolver.NewBuilder(kuberesolver.WithClient(cs), kuberesolver.WithMetrics(m)).Build(
		resolver.Target{URL: url.URL{Scheme: "kubernetes", Path: "/example.gone:grpc"}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	series := func() int {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			n += len(mf.GetMetric())
		}
		return n
	}
	eventually(t, "series for the service", func() bool { return series() > 0 })
	r.Close()
	if n := series(); n != 0 {
		t.Errorf("%d series left after the service's last resolver closed", n)
	}
}
