package kubernetes

import (
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// watch is one EndpointSlice informer for a namespace/service, shared by
// every resolver of the process that targets it with the same client
// (several Dials, several ports): one list and one watch on the
// apiserver however many ClientConns there are. It is reference counted
// by its subscribers and stops with the last.
type watch struct {
	key      watchKey
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   interface {
		List(labels.Selector) ([]*discoveryv1.EndpointSlice, error)
	}
	stop chan struct{}

	mu   sync.Mutex
	subs map[*kubeResolver]struct{}
}

type watchKey struct {
	client             kubernetes.Interface
	namespace, service string
}

// watches are the running watches, by client and service.
var watches = struct {
	sync.Mutex
	m map[watchKey]*watch
}{m: map[watchKey]*watch{}}

// subscribe adds r to the watch of t, starting the watch if none runs.
// r is updated once the watch has synced, and on every event after.
func subscribe(cs kubernetes.Interface, t Target, r *kubeResolver) (*watch, error) {
	key := watchKey{cs, t.Namespace, t.Service}
	watches.Lock()
	defer watches.Unlock()
	w := watches.m[key]
	if w == nil {
		var err error
		if w, err = startWatch(key); err != nil {
			return nil, err
		}
		watches.m[key] = w
	}
	r.watch = w
	w.mu.Lock()
	w.subs[r] = struct{}{}
	w.mu.Unlock()
	if w.informer.HasSynced() {
		go r.update(time.Now())
	}
	return w, nil
}

func startWatch(key watchKey) (*watch, error) {
	w := &watch{key: key, stop: make(chan struct{}), subs: map[*kubeResolver]struct{}{}}
	w.factory = informers.NewSharedInformerFactoryWithOptions(key.client, 0,
		informers.WithNamespace(key.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelServiceName + "=" + key.service
		}))
	inf := w.factory.Discovery().V1().EndpointSlices()
	w.lister = inf.Lister().EndpointSlices(key.namespace)
	w.informer = inf.Informer()
	if err := w.informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		for _, r := range w.subscribers() {
			r.watchError(err)
		}
	}); err != nil {
		return nil, err
	}
	each := func() {
		now := time.Now()
		for _, r := range w.subscribers() {
			r.update(now)
		}
	}
	if _, err := w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { each() },
		UpdateFunc: func(_, _ any) { each() },
		DeleteFunc: func(any) { each() },
	}); err != nil {
		return nil, err
	}
	w.factory.Start(w.stop)
	// Non-blocking: once the first list is in, report what it holds (maybe
	// nothing yet: the Service may not exist). Later events update it.
	go func() {
		if cache.WaitForCacheSync(w.stop, w.informer.HasSynced) {
			each()
		}
	}()
	return w, nil
}

func (w *watch) subscribers() []*kubeResolver {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*kubeResolver, 0, len(w.subs))
	for r := range w.subs {
		out = append(out, r)
	}
	return out
}

func (w *watch) hasSynced() bool { return w.informer.HasSynced() }

func (w *watch) list() ([]*discoveryv1.EndpointSlice, error) {
	return w.lister.List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: w.key.service}))
}

// unsubscribe removes r and stops the watch when r was the last
// subscriber; it reports whether it stopped.
func (w *watch) unsubscribe(r *kubeResolver) bool {
	watches.Lock()
	defer watches.Unlock()
	w.mu.Lock()
	delete(w.subs, r)
	last := len(w.subs) == 0
	w.mu.Unlock()
	if !last {
		return false
	}
	delete(watches.m, w.key)
	close(w.stop)
	go w.factory.Shutdown()
	return true
}

// WatchCount reports how many EndpointSlice watches the process runs, one
// per client and service however many ClientConns resolve it.
func WatchCount() int {
	watches.Lock()
	defer watches.Unlock()
	return len(watches.m)
}
