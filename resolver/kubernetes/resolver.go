package kubernetes

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/resolver"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Scheme is the URI scheme this resolver registers.
const Scheme = "kubernetes"

var logger = grpclog.Component("kubernetes-resolver")

func init() {
	resolver.Register(NewBuilder())
}

// Option configures a Builder.
type Option interface {
	apply(*builder)
}

type optionFunc func(*builder)

func (f optionFunc) apply(b *builder) { f(b) }

// WithClient makes the resolver use cs instead of building a client from
// the in-cluster config or the kubeconfig.
func WithClient(cs kubernetes.Interface) Option {
	return optionFunc(func(b *builder) { b.client = cs })
}

// WithKubeconfig names the kubeconfig file to use outside a cluster.
func WithKubeconfig(path string) Option {
	return optionFunc(func(b *builder) { b.kubeconfig = path })
}

// WithZone prefers endpoints in zone when they are enough for the load:
// the rule is Kubernetes' topology-aware routing's (see Merger.Update and
// MinZoneEndpoints); otherwise every zone is used.
func WithZone(zone string) Option {
	return optionFunc(func(b *builder) { b.zone = zone })
}

// WithSubsetSize makes each ClientConn balance over at most size of the
// Service's endpoints, so that a client of a Service with thousands of
// pods holds size connections rather than one per pod. Each client
// chooses its own subset by rendezvous hashing (see Merger.SetSubset):
// subsets stay put as pods come and go, and spread evenly over the pods
// across many clients. 0 (the default) balances over every endpoint.
func WithSubsetSize(size int) Option {
	return optionFunc(func(b *builder) { b.subset = size })
}

// WithMetrics records resolver metrics in m (see NewMetrics).
func WithMetrics(m *Metrics) Option {
	return optionFunc(func(b *builder) { b.metrics = m })
}

// NewBuilder returns a resolver builder for the "kubernetes" scheme. The
// package registers one with default options; pass another to
// grpc.WithResolvers to use options or a test client for one ClientConn.
func NewBuilder(opts ...Option) resolver.Builder {
	b := &builder{}
	for _, o := range opts {
		o.apply(b)
	}
	return b
}

type builder struct {
	client     kubernetes.Interface
	kubeconfig string
	zone       string
	subset     int
	metrics    *Metrics
}

func (*builder) Scheme() string { return Scheme }

// clients are the clientsets built from the in-cluster config or a
// kubeconfig, one per kubeconfig path ("" for the default rules), shared
// by every builder of the process. A failure is not cached: the next
// Build tries again (the kubeconfig may appear, the apiserver come up).
var clients = struct {
	sync.Mutex
	m map[string]kubernetes.Interface
}{m: map[string]kubernetes.Interface{}}

// clientset returns the configured client, or one from the in-cluster
// config, or from the kubeconfig.
func (b *builder) clientset() (kubernetes.Interface, error) {
	if b.client != nil {
		return b.client, nil
	}
	clients.Lock()
	defer clients.Unlock()
	if cs, ok := clients.m[b.kubeconfig]; ok {
		return cs, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if b.kubeconfig != "" {
			rules.ExplicitPath = b.kubeconfig
		}
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes resolver: no in-cluster config and no usable kubeconfig: %w", err)
		}
	}
	cfg.UserAgent = "kuberpc-resolver"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes resolver: client: %w", err)
	}
	clients.m[b.kubeconfig] = cs
	return cs, nil
}

func (b *builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	if a := target.URL.Host; a != "" {
		return nil, fmt.Errorf("kubernetes resolver: target %q has an authority %q, but the resolver watches the cluster of its kubeconfig or pod; want kubernetes:///name.namespace:port (three slashes)", target.URL.String(), a)
	}
	t, err := ParseTarget(target.Endpoint())
	if err != nil {
		return nil, err
	}
	if t.Namespace == "" {
		t.Namespace = ownNamespace()
	}
	if b.subset < 0 {
		return nil, fmt.Errorf("kubernetes resolver: subset size %d is negative", b.subset)
	}
	cs, err := b.clientset()
	if err != nil {
		return nil, err
	}
	r := &kubeResolver{target: t, cc: cc, metrics: b.metrics, merger: NewMerger(t, b.zone)}
	if b.subset > 0 {
		r.merger.SetSubset(b.subset)
	}
	if _, err := subscribe(cs, t, r); err != nil {
		return nil, err
	}
	return r, nil
}

type kubeResolver struct {
	target  Target
	cc      resolver.ClientConn
	metrics *Metrics
	watch   *watch

	closed atomic.Bool

	mu       sync.Mutex // serialises updates to cc
	merger   *Merger
	hadAddrs bool
}

// update recomputes the endpoints from every slice of the Service and
// hands them to the ClientConn.
func (r *kubeResolver) update(eventAt time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() || !r.watch.hasSynced() {
		return
	}
	all, err := r.watch.list()
	if err != nil {
		return
	}
	eps, counts := r.merger.Update(all)
	r.metrics.observeCounts(r.target, counts)
	if len(eps) == 0 {
		err := fmt.Errorf("kubernetes resolver: service %s/%s has no ready or serving endpoints with port %s (%d EndpointSlices, %d not ready)",
			r.target.Namespace, r.target.Service, portString(r.target), len(all), counts.NotReady)
		if len(all) == 0 {
			err = fmt.Errorf("kubernetes resolver: service %s/%s has no EndpointSlices yet (does the Service exist?)", r.target.Namespace, r.target.Service)
		} else if listed, ok := portsListed(all, r.target); !ok {
			hint := ""
			if r.target.PortName == "" {
				hint = " (a number is the pod's port, the Service's targetPort)"
			}
			err = fmt.Errorf("kubernetes resolver: service %s/%s has no endpoints with port %s: the EndpointSlices list %s%s",
				r.target.Namespace, r.target.Service, portString(r.target), strings.Join(listed, ", "), hint)
		}
		r.cc.ReportError(err)
		return
	}
	r.hadAddrs = true
	if err := r.cc.UpdateState(resolver.State{Endpoints: eps}); err != nil {
		logger.Warningf("%s: balancer rejected %d endpoints: %v", r.target, len(eps), err)
	}
	r.metrics.observeUpdate(r.target, time.Since(eventAt))
}

// portsListed reports whether a slice of all lists t's port and, when
// none does, returns the ports they list, name=number, sorted.
func portsListed(all []*discoveryv1.EndpointSlice, t Target) ([]string, bool) {
	seen := map[string]bool{}
	for _, s := range all {
		if _, ok := slicePort(s, t); ok {
			return nil, true
		}
		for _, p := range s.Ports {
			if p.Port != nil {
				name := ""
				if p.Name != nil {
					name = *p.Name
				}
				seen[fmt.Sprintf("%s=%d", name, *p.Port)] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen)), false
}

func portString(t Target) string {
	if t.PortName != "" {
		return fmt.Sprintf("%q", t.PortName)
	}
	return fmt.Sprint(t.Port)
}

// watchError turns the informer's list/watch failures into resolver
// errors, reported to the channel and logged. The balancer keeps the
// endpoints it has (grpc-go's policies ignore a resolver error while they
// have addresses): an unreachable apiserver does not take a working client
// down, but the channel, and whoever watches it, learns of it.
func (r *kubeResolver) watchError(err error) {
	if r.closed.Load() {
		return
	}
	if apierrors.IsForbidden(err) {
		err = fmt.Errorf("kubernetes resolver: forbidden to watch EndpointSlices of %s/%s: the client's identity needs the RBAC rule get/list/watch on endpointslices.discovery.k8s.io in namespace %s (a Role and RoleBinding; `kuberpc manifests` generates them): %w",
			r.target.Namespace, r.target.Service, r.target.Namespace, err)
	} else {
		err = fmt.Errorf("kubernetes resolver: watching EndpointSlices of %s/%s: %w", r.target.Namespace, r.target.Service, err)
	}
	r.mu.Lock()
	r.cc.ReportError(err)
	r.mu.Unlock()
	logger.Warningf("%s: %v", r.target, err)
}

// ResolveNow is a no-op: the watch delivers changes as they happen.
func (r *kubeResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close unsubscribes from the watch, which stops when its last
// subscriber leaves. It does not wait for an update in progress (which may
// itself be waiting on the ClientConn that is closing us).
func (r *kubeResolver) Close() {
	if r.closed.Swap(true) {
		return
	}
	if r.watch.unsubscribe(r) {
		r.metrics.forget(r.target)
	}
}
