package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kuberpc/kuberpc/metricsadapter"
)

// scrapePod reads the kuberpc server metrics of pod through the
// apiserver's pod proxy (which also reaches pods from outside a real
// cluster), from its container port named "metrics".
func scrapePod(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) (metricsadapter.Sample, error) {
	port, ok := metricsadapter.MetricsPort(pod)
	if !ok {
		return metricsadapter.Sample{}, fmt.Errorf("pod %s has no port named metrics", pod.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	body, err := cs.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(int(port)), "/metrics", nil).Stream(ctx)
	if err != nil {
		return metricsadapter.Sample{}, err
	}
	defer body.Close()
	// Read as the metrics adapter reads it: a broken pod's endless
	// /metrics must not fill this process, which status --watch would
	// read again every second.
	b, err := metricsadapter.ReadExposition(body)
	if errors.Is(err, metricsadapter.ErrTooLarge) {
		return metricsadapter.Sample{}, fmt.Errorf("pod %s: /metrics holds more than %d MiB", pod.Name, metricsadapter.MaxScrapeBytes>>20)
	}
	if err != nil {
		return metricsadapter.Sample{}, err
	}
	return metricsadapter.ParseSample(b, time.Now())
}

// rpcRates are a pod's calls per second, 99th-percentile latency (the
// upper bound of the histogram bucket it falls in) and failed share,
// between two samples.
type rpcRates struct {
	rps, failedShare float64
	p99              float64 // seconds; +Inf above the last bucket, NaN with no calls
}

func rates(prev, cur metricsadapter.Sample) (rpcRates, bool) {
	rps, failedShare, ok := metricsadapter.Between(prev, cur)
	if !ok {
		return rpcRates{}, false
	}
	r := rpcRates{rps: rps, failedShare: failedShare, p99: math.NaN()}
	bounds := make([]float64, 0, len(cur.Buckets))
	for ub := range cur.Buckets {
		bounds = append(bounds, ub)
	}
	sort.Float64s(bounds)
	total := 0.0
	if len(bounds) > 0 {
		total = cur.Buckets[bounds[len(bounds)-1]] - prev.Buckets[bounds[len(bounds)-1]]
	}
	for _, ub := range bounds {
		if total > 0 && cur.Buckets[ub]-prev.Buckets[ub] >= 0.99*total {
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
