package cli

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// infraServices are the gRPC services whose calls (probes, reflection,
// ORCA) are not the application's traffic: status leaves them out.
var infraServices = map[string]bool{
	"grpc.health.v1.Health": true, "grpc.reflection.v1.ServerReflection": true,
	"grpc.reflection.v1alpha.ServerReflection": true, "xds.service.orca.v3.OpenRcaService": true,
}

// rpcSample is what a pod's /metrics said at one moment: its
// application calls handled, the failed ones, and the latency histogram.
type rpcSample struct {
	at      time.Time
	handled float64
	failed  float64
	buckets map[float64]float64 // upper bound → cumulative count
}

// scrapePod reads the kuberpc server metrics of pod through the
// apiserver's pod proxy (which also reaches pods from outside a real
// cluster), from its container port named "metrics".
func scrapePod(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) (rpcSample, error) {
	port := ""
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "metrics" {
				port = strconv.Itoa(int(p.ContainerPort))
			}
		}
	}
	if port == "" {
		return rpcSample{}, fmt.Errorf("pod %s has no port named metrics", pod.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	b, err := cs.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, port, "/metrics", nil).DoRaw(ctx)
	if err != nil {
		return rpcSample{}, err
	}
	return parseSample(b, time.Now())
}

// parseSample reads a sample from a Prometheus text exposition.
func parseSample(b []byte, at time.Time) (rpcSample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return rpcSample{}, fmt.Errorf("metrics: %w", err)
	}
	s := rpcSample{at: at, buckets: map[float64]float64{}}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	if f := fams["grpc_server_handled_total"]; f != nil {
		for _, m := range f.GetMetric() {
			if infraServices[label(m, "grpc_service")] {
				continue
			}
			v := m.GetCounter().GetValue()
			s.handled += v
			if label(m, "grpc_code") != "OK" {
				s.failed += v
			}
		}
	}
	if f := fams["grpc_server_handling_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			if infraServices[label(m, "grpc_service")] {
				continue
			}
			for _, bk := range m.GetHistogram().GetBucket() {
				s.buckets[bk.GetUpperBound()] += float64(bk.GetCumulativeCount())
			}
		}
	}
	return s, nil
}

// rpcRates are a pod's calls per second, 99th-percentile latency (the
// upper bound of the histogram bucket it falls in) and failed share,
// between two samples.
type rpcRates struct {
	rps, failedShare float64
	p99              float64 // seconds; +Inf above the last bucket, NaN with no calls
}

func rates(prev, cur rpcSample) (rpcRates, bool) {
	dt := cur.at.Sub(prev.at).Seconds()
	n := cur.handled - prev.handled
	if dt <= 0 || n < 0 { // a restarted process starts its counters again
		return rpcRates{}, false
	}
	r := rpcRates{rps: n / dt, p99: math.NaN()}
	if n > 0 {
		r.failedShare = (cur.failed - prev.failed) / n
	}
	bounds := make([]float64, 0, len(cur.buckets))
	for ub := range cur.buckets {
		bounds = append(bounds, ub)
	}
	sort.Float64s(bounds)
	total := 0.0
	if len(bounds) > 0 {
		total = cur.buckets[bounds[len(bounds)-1]] - prev.buckets[bounds[len(bounds)-1]]
	}
	for _, ub := range bounds {
		if total > 0 && cur.buckets[ub]-prev.buckets[ub] >= 0.99*total {
			r.p99 = ub
			break
		}
	}
	return r, true
}

// formatLatency prints a p99 bucket bound: "≤5ms", ">10s", or "-".
func formatLatency(s float64) string {
	switch {
	case math.IsNaN(s):
		return "-"
	case math.IsInf(s, 1):
		return ">max"
	}
	return "≤" + time.Duration(s*float64(time.Second)).String()
}
