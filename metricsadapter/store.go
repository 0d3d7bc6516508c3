// Package metricsadapter is kuberpc's custom metrics adapter: it scrapes
// every kuberpc server's metrics endpoint (the container port named
// "metrics") and serves, through the apiserver's aggregation layer
// (custom.metrics.k8s.io, on sigs.k8s.io/custom-metrics-apiserver), each
// pod's gRPC request rate, in-flight calls and error ratio, averaged over a
// window, so that a HorizontalPodAutoscaler can scale a Deployment on
// request rate with nothing else installed (no Prometheus, no
// prometheus-adapter).
//
// The metric names are the Metric* constants; kuberpc's manifests name
// them in the HPAs they render.
package metricsadapter

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The metrics the adapter serves for pods.
const (
	// MetricRequestsPerSecond is the pod's rate of completed
	// application calls (grpc_server_handled_total, health checks,
	// reflection and ORCA left out), per second over the window.
	MetricRequestsPerSecond = "grpc_server_requests_per_second"
	// MetricInFlight is the pod's application calls in flight, averaged
	// over the window's samples.
	MetricInFlight = "grpc_server_in_flight_requests"
	// MetricErrorRatio is the share of the pod's calls over the window
	// that ended with a code other than OK.
	MetricErrorRatio = "grpc_server_error_ratio"
)

// Metrics are the names the adapter serves.
var Metrics = []string{MetricRequestsPerSecond, MetricInFlight, MetricErrorRatio}

// infraServices are not the application's traffic.
var infraServices = map[string]bool{
	"grpc.health.v1.Health": true, "grpc.reflection.v1.ServerReflection": true,
	"grpc.reflection.v1alpha.ServerReflection": true, "xds.service.orca.v3.OpenRcaService": true,
}

// Sample is what one scrape of a pod's /metrics said of its application
// calls (health checks, reflection and ORCA left out).
type Sample struct {
	At       time.Time
	Handled  float64 // calls completed, all codes
	Failed   float64 // of which with a code other than OK
	InFlight float64
	// Buckets is the latency histogram (grpc_server_handling_seconds)
	// summed over methods: upper bound → cumulative count.
	Buckets map[float64]float64
}

// ParseSample reads a Sample from a Prometheus text exposition of the
// kuberpc server metrics.
func ParseSample(b []byte, at time.Time) (Sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return Sample{}, fmt.Errorf("metrics exposition: %w", err)
	}
	s := Sample{At: at, Buckets: map[float64]float64{}}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	// A count is a finite number, 0 or more: a NaN, an infinity or a
	// negative count (a broken or hostile exporter) would reach the HPA
	// as nonsense, so the scrape fails instead, naming the series.
	count := func(name string, m *dto.Metric, v float64) error {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("metrics exposition: %s{grpc_service=%q,grpc_method=%q} is %v: not a count", name, label(m, "grpc_service"), label(m, "grpc_method"), v)
		}
		return nil
	}
	// A series is of the kind kuberpc's servers export, or untyped (an
	// exposition without TYPE lines), whose values count as that kind.
	// Another kind fails the scrape: its values would read as 0.
	kind := func(f *dto.MetricFamily, want dto.MetricType) error {
		if t := f.GetType(); t != want && t != dto.MetricType_UNTYPED {
			return fmt.Errorf("metrics exposition: %s is a %s: want a %s", f.GetName(), strings.ToLower(t.String()), strings.ToLower(want.String()))
		}
		return nil
	}
	// value is a counter's or a gauge's value, or an untyped one's.
	value := func(m *dto.Metric) float64 {
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
		return m.GetUntyped().GetValue()
	}
	if f := fams["grpc_server_handled_total"]; f != nil {
		if err := kind(f, dto.MetricType_COUNTER); err != nil {
			return Sample{}, err
		}
		for _, m := range f.GetMetric() {
			if infraServices[label(m, "grpc_service")] {
				continue
			}
			v := value(m)
			if err := count(f.GetName(), m, v); err != nil {
				return Sample{}, err
			}
			s.Handled += v
			if label(m, "grpc_code") != "OK" {
				s.Failed += v
			}
		}
	}
	if f := fams["grpc_server_handling_seconds"]; f != nil {
		if err := kind(f, dto.MetricType_HISTOGRAM); err != nil {
			return Sample{}, err
		}
		for _, m := range f.GetMetric() {
			if infraServices[label(m, "grpc_service")] {
				continue
			}
			for _, b := range m.GetHistogram().GetBucket() {
				s.Buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			}
		}
	}
	if f := fams["grpc_server_in_flight"]; f != nil {
		if err := kind(f, dto.MetricType_GAUGE); err != nil {
			return Sample{}, err
		}
		for _, m := range f.GetMetric() {
			if !infraServices[label(m, "grpc_service")] {
				v := value(m)
				if err := count(f.GetName(), m, v); err != nil {
					return Sample{}, err
				}
				s.InFlight += v
			}
		}
	}
	return s, nil
}

// Between returns the calls per second and the share of them that
// failed from sample prev to sample cur of one process; false when cur is
// not later than prev or its counters went back (the process restarted).
func Between(prev, cur Sample) (rate, failedShare float64, ok bool) {
	dt := cur.At.Sub(prev.At).Seconds()
	n := cur.Handled - prev.Handled
	if dt <= 0 || n < 0 {
		return 0, 0, false
	}
	if n > 0 {
		failedShare = (cur.Failed - prev.Failed) / n
	}
	return n / dt, failedShare, true
}

// series are one pod's samples within the window, oldest first.
type series struct {
	samples []Sample
	err     error // the last scrape's, nil when it succeeded
}

// Store keeps each pod's recent samples and computes the served values.
// Its methods are safe for concurrent use.
type Store struct {
	window time.Duration

	mu   sync.Mutex
	pods map[string]*series // by namespace/name/uid
}

// NewStore returns a Store averaging over window.
func NewStore(window time.Duration) *Store {
	return &Store{window: window, pods: map[string]*series{}}
}

// Add records a scrape of pod key: its sample, or the error that kept it
// from one. Samples older than the window (and one before, so that a rate
// spans the whole window) are dropped; a counter that went back (the
// process restarted) starts the series again.
func (s *Store) Add(key string, sm Sample, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.pods[key]
	if se == nil {
		se = &series{}
		s.pods[key] = se
	}
	se.err = err
	if err != nil {
		return
	}
	if n := len(se.samples); n > 0 && sm.Handled < se.samples[n-1].Handled {
		se.samples = se.samples[:0]
	}
	se.samples = append(se.samples, sm)
	cut := 0
	for cut+1 < len(se.samples) && sm.At.Sub(se.samples[cut+1].At) >= s.window {
		cut++
	}
	se.samples = se.samples[cut:]
}

// Forget drops pods whose keys keep does not report.
func (s *Store) Forget(keep func(key string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.pods {
		if !keep(k) {
			delete(s.pods, k)
		}
	}
}

// Value is a served metric value and the window it covers.
type Value struct {
	At     time.Time
	Window time.Duration
	Value  float64
}

// Get returns metric for pod key, or false when the adapter has no value
// for it (fewer than two samples, the last scrape failed, or the value is
// past MaxValue).
func (s *Store) Get(key, metric string) (Value, bool) {
	v, ok := s.compute(key, metric)
	if !ok || !inRange(v.Value) {
		return Value{}, false
	}
	return v, true
}

// inRange reports whether v is a value the adapter serves.
func inRange(v float64) bool { return v >= 0 && v <= MaxValue }

// compute is Get without the range check.
func (s *Store) compute(key, metric string) (Value, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.pods[key]
	if se == nil || se.err != nil || len(se.samples) < 2 {
		return Value{}, false
	}
	first, last := se.samples[0], se.samples[len(se.samples)-1]
	rate, failedShare, ok := Between(first, last)
	if !ok {
		return Value{}, false
	}
	v := Value{At: last.At, Window: last.At.Sub(first.At)}
	switch metric {
	case MetricRequestsPerSecond:
		v.Value = rate
	case MetricErrorRatio:
		v.Value = failedShare
	case MetricInFlight:
		sum := 0.0
		for _, sm := range se.samples[1:] {
			sum += sm.InFlight
		}
		v.Value = sum / float64(len(se.samples)-1)
	default:
		return Value{}, false
	}
	return v, true
}

// MaxValue is the largest value the adapter serves: a metric value is a
// quantity in thousandths, an int64. Finite counts can still add up past
// it; such a value is not served, and the API's answer says why.
const MaxValue = math.MaxInt64 / 1000

// Err returns the last scrape error of pod key.
func (s *Store) Err(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if se := s.pods[key]; se != nil {
		return se.err
	}
	return nil
}
