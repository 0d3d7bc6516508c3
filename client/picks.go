package client

import (
	"context"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/stats"
)

// pickCounter counts RPCs per endpoint (whichever balancer picked it),
// from the client side's outgoing headers, which name the connection's
// remote address.
type pickCounter struct {
	vec   *prometheus.CounterVec
	cache sync.Map // net.Addr (one per connection) -> prometheus.Counter
}

func newPickCounter(reg prometheus.Registerer) (*pickCounter, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kuberpc_client_picks_total",
		Help: "RPCs sent to each endpoint, as picked by the load balancer.",
	}, []string{"endpoint"})
	if err := reg.Register(vec); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if v, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return &pickCounter{vec: v}, nil
			}
		}
		return nil, err
	}
	return &pickCounter{vec: vec}, nil
}

func (p *pickCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (p *pickCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	h, ok := s.(*stats.OutHeader)
	if !ok || !h.Client || h.RemoteAddr == nil {
		return
	}
	p.counter(h.RemoteAddr).Inc()
}

func (p *pickCounter) counter(a net.Addr) prometheus.Counter {
	if c, ok := p.cache.Load(a); ok {
		return c.(prometheus.Counter)
	}
	c := p.vec.WithLabelValues(a.String())
	p.cache.Store(a, c)
	return c
}

type connAddrKey struct{}

// TagConn remembers the connection's address for HandleConn.
func (p *pickCounter) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connAddrKey{}, info.RemoteAddr)
}

// HandleConn forgets a closed connection's address object (each connection
// has its own), so the cache does not grow with reconnections; the
// endpoint's series stays.
func (p *pickCounter) HandleConn(ctx context.Context, s stats.ConnStats) {
	if e, ok := s.(*stats.ConnEnd); ok && e.Client {
		if a, ok := ctx.Value(connAddrKey{}).(net.Addr); ok {
			p.cache.Delete(a)
		}
	}
}
