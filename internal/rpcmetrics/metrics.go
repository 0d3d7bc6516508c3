// Package rpcmetrics records per-method Prometheus metrics for gRPC servers
// and clients, with the metric and label names of go-grpc-prometheus
// (grpc_server_handled_total{grpc_service,grpc_method,grpc_type,grpc_code},
// ...) so existing dashboards work. Collectors for a method are looked up
// once and cached, so recording an RPC does not allocate.
package rpcmetrics

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// Type is the shape of an RPC, the grpc_type label.
type Type string

// The RPC shapes.
const (
	Unary        Type = "unary"
	ClientStream Type = "client_stream"
	ServerStream Type = "server_stream"
	BidiStream   Type = "bidi_stream"
)

// StreamType returns the Type of a streaming RPC.
func StreamType(clientStream, serverStream bool) Type {
	switch {
	case clientStream && serverStream:
		return BidiStream
	case clientStream:
		return ClientStream
	case serverStream:
		return ServerStream
	}
	return Unary
}

// DefaultBuckets are the latency histogram buckets, in seconds.
var DefaultBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics holds the collectors of one side ("server" or "client"). It is
// safe for concurrent use.
type Metrics struct {
	latency *prometheus.HistogramVec
	methods sync.Map // method key -> *Method
}

// New creates the collectors for side ("server" or "client") and registers
// them with reg. Collectors already registered there (another Server in the
// same process) are shared.
func New(side string, reg prometheus.Registerer) (*Metrics, error) {
	labels := []string{"grpc_service", "grpc_method", "grpc_type"}
	m := &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_" + side + "_handling_seconds",
			Help:    "Time from RPC start to completion on the " + side + ".",
			Buckets: DefaultBuckets,
		}, labels),
	}
	c, err := RegisterShared(reg, newCounts(side))
	if err != nil {
		return nil, err
	}
	c.add(m)
	if m.latency, err = RegisterShared(reg, m.latency); err != nil {
		return nil, err
	}
	return m, nil
}

// RegisterShared registers c with reg, or returns the collector of the
// same metrics already registered there (by another Server or client in
// the same process), so that every one of them records into it.
func RegisterShared[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// Method is the cached collectors of one method. Its counts are plain
// atomics that the registry reads when it is scraped: recording a call
// costs no floating-point compare-and-swap loop (a Prometheus gauge's)
// and no second count of the same thing.
type Method struct {
	key             key // its full name and type
	service, method string
	name            string
	started         atomic.Uint64
	running         atomic.Int64
	handled         [17]atomic.Uint64 // by code
	latency         prometheus.Observer
}

type key struct {
	method string
	typ    Type
}

// Method returns the collectors of fullMethod ("/pkg.Service/Method").
func (m *Metrics) Method(fullMethod string, typ Type) *Method {
	k := key{fullMethod, typ}
	if v, ok := m.methods.Load(k); ok {
		return v.(*Method)
	}
	service, method := SplitMethod(fullMethod)
	mm := &Method{
		key:     k,
		service: service,
		method:  method,
		name:    strings.TrimPrefix(fullMethod, "/"),
		latency: m.latency.WithLabelValues(service, method, string(typ)),
	}
	v, _ := m.methods.LoadOrStore(k, mm)
	return v.(*Method)
}

// SplitMethod splits "/pkg.Service/Method" into "pkg.Service" and "Method".
func SplitMethod(fullMethod string) (service, method string) {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return "unknown", s
}

// Start records the start of an RPC.
func (mm *Method) Start() {
	mm.started.Add(1)
	mm.running.Add(1)
}

// Done records the end of an RPC started with Start.
func (mm *Method) Done(code codes.Code, elapsed time.Duration) {
	mm.running.Add(-1)
	mm.latency.Observe(elapsed.Seconds())
	if int(code) < len(mm.handled) {
		mm.handled[code].Add(1)
	}
}

// InFlight returns the number of RPCs in flight now, across methods.
func (m *Metrics) InFlight() int64 {
	var n int64
	m.methods.Range(func(_, v any) bool {
		n += v.(*Method).running.Load()
		return true
	})
	return n
}

// Totals returns the RPCs completed and failed, across methods, since the
// Metrics were created. It reads every method's counts: it is for load
// reports, not for each call.
func (m *Metrics) Totals() (completed, failed uint64) {
	m.methods.Range(func(_, v any) bool {
		mm := v.(*Method)
		for c := range mm.handled {
			n := mm.handled[c].Load()
			completed += n
			if codes.Code(c) != codes.OK {
				failed += n
			}
		}
		return true
	})
	return completed, failed
}

// Running lists the methods with RPCs in flight now, as "pkg.Service/Method×n",
// sorted.
func (m *Metrics) Running() []string {
	var out []string
	m.methods.Range(func(_, v any) bool {
		mm := v.(*Method)
		if n := mm.running.Load(); n > 0 {
			out = append(out, fmt.Sprintf("%s×%d", mm.name, n))
		}
		return true
	})
	slices.Sort(out)
	return out
}

// counts exports the started, handled and in-flight series of the
// methods of every Metrics registered with one registry, read from their
// atomics when the registry is scraped.
type counts struct {
	started, handled, inFlight *prometheus.Desc

	mu      sync.Mutex
	sources []*Metrics
}

func newCounts(side string) *counts {
	labels := []string{"grpc_service", "grpc_method", "grpc_type"}
	return &counts{
		started:  prometheus.NewDesc("grpc_"+side+"_started_total", "RPCs started on the "+side+".", labels, nil),
		handled:  prometheus.NewDesc("grpc_"+side+"_handled_total", "RPCs completed on the "+side+", by status code.", append(labels[:3:3], "grpc_code"), nil),
		inFlight: prometheus.NewDesc("grpc_"+side+"_in_flight", "RPCs in flight on the "+side+".", labels, nil),
	}
}

func (c *counts) add(m *Metrics) {
	c.mu.Lock()
	c.sources = append(c.sources, m)
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *counts) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.started
	ch <- c.handled
	ch <- c.inFlight
}

// Collect implements prometheus.Collector: one series per method called
// (summed over the Metrics sharing it), with a handled series per code.
func (c *counts) Collect(ch chan<- prometheus.Metric) {
	type sum struct {
		started uint64
		running int64
		handled [17]uint64
	}
	sums := map[key]*sum{}
	var order []*Method
	c.mu.Lock()
	sources := slices.Clone(c.sources)
	c.mu.Unlock()
	for _, m := range sources {
		m.methods.Range(func(k, v any) bool {
			mm := v.(*Method)
			s := sums[k.(key)]
			if s == nil {
				s = &sum{}
				sums[k.(key)] = s
				order = append(order, mm)
			}
			// Handled before started and running: a call ending between
			// the reads is then counted as started but neither running
			// nor handled, never handled and not started.
			for code := range mm.handled {
				s.handled[code] += mm.handled[code].Load()
			}
			s.running += mm.running.Load()
			s.started += mm.started.Load()
			return true
		})
	}
	for _, mm := range order {
		s := sums[mm.key]
		lv := []string{mm.service, mm.method, string(mm.key.typ)}
		ch <- prometheus.MustNewConstMetric(c.started, prometheus.CounterValue, float64(s.started), lv...)
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(max(s.running, 0)), lv...)
		for code := range s.handled {
			ch <- prometheus.MustNewConstMetric(c.handled, prometheus.CounterValue, float64(s.handled[code]), append(lv, codes.Code(code).String())...)
		}
	}
}
