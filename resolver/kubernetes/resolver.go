package kubernetes

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/resolver"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
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
	metrics    *Metrics

	once      sync.Once
	lazy      kubernetes.Interface
	clientErr error
}

func (*builder) Scheme() string { return Scheme }

// clientset returns the configured client, or one from the in-cluster
// config, or from the kubeconfig.
func (b *builder) clientset() (kubernetes.Interface, error) {
	if b.client != nil {
		return b.client, nil
	}
	b.once.Do(func() {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			if b.kubeconfig != "" {
				rules.ExplicitPath = b.kubeconfig
			}
			cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
			if err != nil {
				b.clientErr = fmt.Errorf("kubernetes resolver: no in-cluster config and no usable kubeconfig: %w", err)
				return
			}
		}
		cfg.UserAgent = "kuberpc-resolver"
		b.lazy, b.clientErr = kubernetes.NewForConfig(cfg)
	})
	return b.lazy, b.clientErr
}

func (b *builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	t, err := ParseTarget(target.Endpoint())
	if err != nil {
		return nil, err
	}
	if t.Namespace == "" {
		t.Namespace = ownNamespace()
	}
	cs, err := b.clientset()
	if err != nil {
		return nil, err
	}
	r := &kubeResolver{target: t, cc: cc, metrics: b.metrics, stop: make(chan struct{}), merger: NewMerger(t, b.zone)}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithNamespace(t.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelServiceName + "=" + t.Service
		}))
	inf := factory.Discovery().V1().EndpointSlices()
	r.lister = inf.Lister().EndpointSlices(t.Namespace)
	informer := inf.Informer()
	if err := informer.SetWatchErrorHandler(r.watchError); err != nil {
		return nil, err
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.update(time.Now()) },
		UpdateFunc: func(_, _ any) { r.update(time.Now()) },
		DeleteFunc: func(any) { r.update(time.Now()) },
	}); err != nil {
		return nil, err
	}
	factory.Start(r.stop)
	// Non-blocking: once the first list is in, report what it holds (maybe
	// nothing yet: the Service may not exist). Later events update it.
	go func() {
		if cache.WaitForCacheSync(r.stop, informer.HasSynced) {
			r.mu.Lock()
			r.synced = true
			r.mu.Unlock()
			r.update(time.Now())
		}
	}()
	r.factory = factory
	return r, nil
}

type kubeResolver struct {
	target  Target
	cc      resolver.ClientConn
	metrics *Metrics
	lister  interface {
		List(labels.Selector) ([]*discoveryv1.EndpointSlice, error)
	}
	factory informers.SharedInformerFactory
	stop    chan struct{}

	closed atomic.Bool

	mu       sync.Mutex // serialises updates to cc
	merger   *Merger
	synced   bool
	hadAddrs bool
}

// update recomputes the endpoints from every slice of the Service and
// hands them to the ClientConn.
func (r *kubeResolver) update(eventAt time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() || !r.synced {
		return
	}
	all, err := r.lister.List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: r.target.Service}))
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

func portString(t Target) string {
	if t.PortName != "" {
		return fmt.Sprintf("%q", t.PortName)
	}
	return fmt.Sprint(t.Port)
}

// watchError turns the informer's list/watch failures into resolver
// errors. Endpoints already known are kept: an unreachable apiserver does
// not take a working client down.
func (r *kubeResolver) watchError(_ *cache.Reflector, err error) {
	if apierrors.IsForbidden(err) {
		err = fmt.Errorf("kubernetes resolver: forbidden to watch EndpointSlices of %s/%s: the client's identity needs the RBAC rule get/list/watch on endpointslices.discovery.k8s.io in namespace %s (a Role and RoleBinding; `kuberpc manifests` generates them): %w",
			r.target.Namespace, r.target.Service, r.target.Namespace, err)
	}
	r.mu.Lock()
	had := r.hadAddrs
	r.mu.Unlock()
	if !had && !r.closed.Load() {
		r.cc.ReportError(err)
	}
	logger.Warningf("%s: %v", r.target, err)
}

// ResolveNow is a no-op: the watch delivers changes as they happen.
func (r *kubeResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watch. It does not wait for an update in progress (which
// may itself be waiting on the ClientConn that is closing us).
func (r *kubeResolver) Close() {
	if r.closed.Swap(true) {
		return
	}
	close(r.stop)
	go r.factory.Shutdown()
}
