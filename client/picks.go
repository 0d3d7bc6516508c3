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

	conns *connCounts // shared by every pickCounter of vec
}

// connCounts counts open connections per endpoint for one CounterVec,
// across the ClientConns that share it.
type connCounts struct {
	mu sync.Mutex
	n  map[string]int
}

var sharedCounts sync.Map // *prometheus.CounterVec -> *connCounts

func countsFor(vec *prometheus.CounterVec) *connCounts {
	c, _ := sharedCounts.LoadOrStore(vec, &connCounts{n: map[string]int{}})
	return c.(*connCounts)
}

func newPickCounter(reg prometheus.Registerer) (*pickCounter, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kuberpc_client_picks_total",
		Help: "RPCs sent to each endpoint, as picked by the load balancer.",
	}, []string{"endpoint"})
	if err := reg.Register(vec); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if v, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return &pickCounter{vec: v, conns: countsFor(v)}, nil
			}
		}
		return nil, err
	}
	return &pickCounter{vec: vec, conns: countsFor(vec)}, nil
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

// HandleConn counts the open connections per endpoint. When a connection
// closes it forgets the connection's address object (each connection has
// its own), so the cache does not grow with reconnections; when the last
// connection to an endpoint closes (it left the Service, or the
// ClientConn closed) the endpoint's series is deleted, so series do not
// pile up as pods come and go. A reconnection starts the count again.
func (p *pickCounter) HandleConn(ctx context.Context, s stats.ConnStats) {
	a, ok := ctx.Value(connAddrKey{}).(net.Addr)
	if !ok || !s.IsClient() {
		return
	}
	switch s.(type) {
	case *stats.ConnBegin:
		p.conns.mu.Lock()
		p.conns.n[a.String()]++
		p.conns.mu.Unlock()
	case *stats.ConnEnd:
		p.cache.Delete(a)
		c := p.conns
		c.mu.Lock()
		key := a.String()
		if c.n[key]--; c.n[key] <= 0 {
			delete(c.n, key)
			p.vec.DeleteLabelValues(key)
		}
		c.mu.Unlock()
	}
}
