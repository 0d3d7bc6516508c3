package kubernetes

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the resolver's Prometheus metrics: the time from an
// EndpointSlice event to the balancer having the new endpoints (its new
// picker), and endpoints by condition. A nil *Metrics records nothing.
type Metrics struct {
	updateSeconds *prometheus.HistogramVec
	endpoints     *prometheus.GaugeVec
}

// NewMetrics creates the resolver metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		updateSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kuberpc_resolver_update_seconds",
			Help:    "Time from an EndpointSlice event to the balancer accepting the new endpoints.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"service"}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kuberpc_resolver_endpoints",
			Help: "Endpoints of a service by condition: ready, serving_terminating, not_ready, skipped.",
		}, []string{"service", "condition"}),
	}
	for _, c := range []prometheus.Collector{m.updateSeconds, m.endpoints} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observeUpdate(t Target, d time.Duration) {
	if m == nil {
		return
	}
	m.updateSeconds.WithLabelValues(t.Namespace + "/" + t.Service).Observe(d.Seconds())
}

func (m *Metrics) observeCounts(t Target, c Counts) {
	if m == nil {
		return
	}
	svc := t.Namespace + "/" + t.Service
	m.endpoints.WithLabelValues(svc, "ready").Set(float64(c.Ready))
	m.endpoints.WithLabelValues(svc, "serving_terminating").Set(float64(c.ServingTerminating))
	m.endpoints.WithLabelValues(svc, "not_ready").Set(float64(c.NotReady))
	m.endpoints.WithLabelValues(svc, "skipped").Set(float64(c.Skipped))
}

// forget deletes the series of t's service, when nothing resolves it any
// more.
func (m *Metrics) forget(t Target) {
	if m == nil {
		return
	}
	svc := t.Namespace + "/" + t.Service
	m.updateSeconds.DeleteLabelValues(svc)
	m.endpoints.DeletePartialMatch(prometheus.Labels{"service": svc})
}
