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
	started  *prometheus.CounterVec
	handled  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	methods  sync.Map // method key -> *Method

	// Totals across methods, read by ORCA load reporting and load shedding.
	total, errs atomic.Uint64
	inFlightN   atomic.Int64
}

// New creates the collectors for side ("server" or "client") and registers
// them with reg. Collectors already registered there (another Server in the
// same process) are shared.
func New(side string, reg prometheus.Registerer) (*Metrics, error) {
	labels := []string{"grpc_service", "grpc_method", "grpc_type"}
	m := &Metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_" + side + "_started_total",
			Help: "RPCs started on the " + side + ".",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_" + side + "_handled_total",
			Help: "RPCs completed on the " + side + ", by status code.",
		}, append(labels[:3:3], "grpc_code")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_" + side + "_handling_seconds",
			Help:    "Time from RPC start to completion on the " + side + ".",
			Buckets: DefaultBuckets,
		}, labels),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "grpc_" + side + "_in_flight",
			Help: "RPCs in flight on the " + side + ".",
		}, labels),
	}
	var err error
	m.started, err = register(reg, m.started)
	if err != nil {
		return nil, err
	}
	if m.handled, err = register(reg, m.handled); err != nil {
		return nil, err
	}
	if m.latency, err = register(reg, m.latency); err != nil {
		return nil, err
	}
	if m.inFlight, err = register(reg, m.inFlight); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
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

// Method is the cached collectors of one method.
type Method struct {
	m        *Metrics
	name     string
	running  atomic.Int64
	started  prometheus.Counter
	inFlight prometheus.Gauge
	latency  prometheus.Observer
	handled  [17]prometheus.Counter
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
		m:        m,
		name:     strings.TrimPrefix(fullMethod, "/"),
		started:  m.started.WithLabelValues(service, method, string(typ)),
		inFlight: m.inFlight.WithLabelValues(service, method, string(typ)),
		latency:  m.latency.WithLabelValues(service, method, string(typ)),
	}
	for c := range mm.handled {
		mm.handled[c] = m.handled.WithLabelValues(service, method, string(typ), codes.Code(c).String())
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

// Start records the start of an RPC and returns the number in flight
// across all methods, including this one.
func (mm *Method) Start() int64 {
	mm.started.Inc()
	mm.inFlight.Inc()
	mm.running.Add(1)
	return mm.m.inFlightN.Add(1)
}

// Done records the end of an RPC started with Start.
func (mm *Method) Done(code codes.Code, elapsed time.Duration) {
	mm.inFlight.Dec()
	mm.running.Add(-1)
	mm.m.inFlightN.Add(-1)
	mm.latency.Observe(elapsed.Seconds())
	if int(code) < len(mm.handled) {
		mm.handled[code].Inc()
	}
	mm.m.total.Add(1)
	if code != codes.OK {
		mm.m.errs.Add(1)
	}
}

// Totals returns the RPCs completed and failed, across methods, since the
// Metrics were created, and the number in flight now.
func (m *Metrics) Totals() (completed, failed uint64, inFlight int64) {
	return m.total.Load(), m.errs.Load(), m.inFlightN.Load()
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
