package metricsadapter

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// podOn is a running pod whose metrics port is srv's, on loopback.
func podOn(t *testing.T, name string, srv *httptest.Server) *corev1.Pod {
	t.Helper()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name + "-uid"), Labels: map[string]string{"app": "x"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: int32(p)}}}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1"},
	}
}

func lister(pods ...*corev1.Pod) listersv1.PodLister {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		idx.Add(p)
	}
	return listersv1.NewPodLister(idx)
}

func TestProviderServesScrapedRates(t *testing.T) {
	var calls atomic.Int64
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(exposition(int(calls.Add(100)), 0, 1))
	}))
	defer good.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("this is { not prometheus"))
	}))
	defer broken.Close()
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("# " + strings.Repeat("x", MaxScrapeBytes) + "\n"))
	}))
	defer huge.Close()
	// Counts a hostile or broken exporter could send: a jump past what
	// the API serves, and NaN.
	var jumps atomic.Int64
	overflow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "# TYPE grpc_server_handled_total counter\ngrpc_server_handled_total{grpc_code=\"OK\",grpc_service=\"a.B\"} %g\n", float64(jumps.Add(1)-1)*1e300)
	}))
	defer overflow.Close()
	nan := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "# TYPE grpc_server_handled_total counter\ngrpc_server_handled_total{grpc_code=\"OK\",grpc_service=\"a.B\"} NaN\n")
	}))
	defer nan.Close()
	pods := []*corev1.Pod{podOn(t, "good", good), podOn(t, "broken", broken), podOn(t, "huge", huge), podOn(t, "overflow", overflow), podOn(t, "nan", nan)}
	p := NewProvider(lister(pods...), time.Minute, time.Second)
	ctx := context.Background()
	p.scrapeAll(ctx)
	time.Sleep(50 * time.Millisecond)
	p.scrapeAll(ctx)

	info := provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: MetricRequestsPerSecond}
	list, err := p.GetMetricBySelector(ctx, "ns", labels.SelectorFromSet(labels.Set{"app": "x"}), info, labels.Everything())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].DescribedObject.Name != "good" || list.Items[0].Value.MilliValue() <= 0 {
		t.Fatalf("values %+v; want one, the good pod's, positive", list.Items)
	}
	for name, want := range map[string]string{"broken": "its metrics endpoint failed", "huge": "more than 8388608 bytes",
		"overflow": "is out of the range the API serves, 0 to 9223372036854775", "nan": "is NaN: not a count"} {
		_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "ns", Name: name}, info, labels.Everything())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("pod %s: %v; want an error saying %q", name, err, want)
		}
	}
	info.Metric = "grpc_server_nonsense"
	if _, err := p.GetMetricBySelector(ctx, "ns", labels.Everything(), info, labels.Everything()); err == nil ||
		!strings.Contains(err.Error(), `no metric "grpc_server_nonsense" for pods; it serves`) {
		t.Errorf("unknown metric: %v", err)
	}
	if got := len(p.ListAllMetrics()); got != len(Metrics) {
		t.Errorf("ListAllMetrics: %d, want %d", got, len(Metrics))
	}
}
