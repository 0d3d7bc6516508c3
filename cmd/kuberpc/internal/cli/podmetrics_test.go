package cli

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kuberpc/kuberpc/metricsadapter"
)

// exposition is a server's /metrics with n SayHello calls (failed of them
// UNAVAILABLE), slow of them in the 1 s bucket and the rest under 5 ms,
// and health checks that status must not count.
func exposition(n, failed, slow int) []byte {
	return fmt.Appendf(nil, `# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary"} %d
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary"} %d
grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 1000
# TYPE grpc_server_handling_seconds histogram
grpc_server_handling_seconds_bucket{grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary",le="0.005"} %d
grpc_server_handling_seconds_bucket{grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary",le="1"} %d
grpc_server_handling_seconds_bucket{grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary",le="+Inf"} %d
grpc_server_handling_seconds_sum{grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary"} 1
grpc_server_handling_seconds_count{grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary"} %d
grpc_server_handling_seconds_bucket{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary",le="0.005"} 0
grpc_server_handling_seconds_bucket{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary",le="1"} 0
grpc_server_handling_seconds_bucket{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary",le="+Inf"} 1000
grpc_server_handling_seconds_sum{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 100
grpc_server_handling_seconds_count{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 1000
`, n-failed, failed, n-slow, n, n, n)
}

func TestRates(t *testing.T) {
	t0 := time.Now()
	prev, err := metricsadapter.ParseSample(exposition(100, 0, 0), t0)
	if err != nil {
		t.Fatal(err)
	}
	// 2 s later: 400 more calls, 8 failed, 2 slow (0.5 %: p99 is fast).
	cur, err := metricsadapter.ParseSample(exposition(500, 8, 2), t0.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := rates(prev, cur)
	if !ok || r.rps != 200 || r.failedShare != 0.02 || r.p99 != 0.005 {
		t.Errorf("rates = %+v, %v; want 200 rps, 0.02 failed, p99 ≤5ms", r, ok)
	}
	// 10 more of which 5 slow: p99 is in the 1 s bucket.
	next, _ := metricsadapter.ParseSample(exposition(510, 8, 7), t0.Add(3*time.Second))
	if r, _ := rates(cur, next); r.p99 != 1 || formatLatency(r.p99) != "≤1s" {
		t.Errorf("p99 = %v (%s); want ≤1s", r.p99, formatLatency(r.p99))
	}
	// No calls: no latency to show.
	idle, _ := metricsadapter.ParseSample(exposition(510, 8, 7), t0.Add(4*time.Second))
	if r, ok := rates(next, idle); !ok || r.rps != 0 || !math.IsNaN(r.p99) || formatLatency(r.p99) != "-" {
		t.Errorf("idle p99 = %v", r.p99)
	}
	// A restarted process: counters went back, no rate.
	if _, ok := rates(next, prev); ok {
		t.Errorf("rates across a counter reset reported")
	}
	if _, err := metricsadapter.ParseSample([]byte("not { metrics"), t0); err == nil {
		t.Errorf("malformed metrics parsed")
	}
}

// TestScrapePodBoundsWhatItReads: status reads a pod's /metrics through
// the apiserver's pod proxy as the metrics adapter reads it, up to
// metricsadapter.MaxScrapeBytes: a pod that answers more is named, not
// read to the end (before, the whole answer was read into memory, every
// second under --watch). The apiserver is a stand-in serving the proxy
// path; what is under test is the reading.
func TestScrapePodBoundsWhatItReads(t *testing.T) {
	body := exposition(10, 0, 0)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/namespaces/ns/pods/http:small:9090/proxy/metrics":
			w.Write(body)
		case "/api/v1/namespaces/ns/pods/http:huge:9090/proxy/metrics":
			line := bytes.Repeat([]byte("#"), 1023)
			for range metricsadapter.MaxScrapeBytes/1024 + 2 {
				if _, err := w.Write(append(line, '\n')); err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}},
		}}}}
	}
	if _, err := scrapePod(context.Background(), cs, pod("small")); err != nil {
		t.Errorf("a pod's /metrics of %d bytes: %v", len(body), err)
	}
	_, err = scrapePod(context.Background(), cs, pod("huge"))
	if want := fmt.Sprintf("pod huge: /metrics holds more than %d MiB", metricsadapter.MaxScrapeBytes>>20); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a pod's /metrics past the bound: %v; want %q", err, want)
	}
}
