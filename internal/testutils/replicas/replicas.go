// Package replicas starts in-process replicas of the example service on
// the kuberpc runtime, each on its own loopback listener, with a delay and
// an ORCA utilisation that tests and benchmarks can change while they run.
// It stands in for a Service's pods where the Kubernetes part is not what
// is being measured. Serve, which Start uses, runs one kuberpc server with
// any services, for the black-box tests that need a real server.
package replicas

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// Replica is one running server.
type Replica struct {
	Addr  string
	Calls atomic.Int64 // SayHello calls served

	srv      *server.Server
	delay    atomic.Int64  // nanoseconds added to every SayHello
	util     atomic.Uint64 // float64 bits: ORCA application utilization
	sem      chan struct{} // workers, when limited
	inFlight atomic.Int64
	failing  atomic.Bool
}

// SetFailing makes every SayHello fail with UNAVAILABLE while the
// replica's health stays SERVING: the replica a health check cannot see.
func (r *Replica) SetFailing(f bool) { r.failing.Store(f) }

// SetWorkers limits the replica to n concurrent SayHello calls (others
// queue), like a server with a fixed worker pool, and makes its ORCA
// utilization the queue and workers in use over n. Call it before load.
func (r *Replica) SetWorkers(n int) { r.sem = make(chan struct{}, n) }

// SetDelay makes every SayHello take at least d more.
func (r *Replica) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// SetUtilization sets the application utilization the replica reports
// through ORCA (per call and out of band).
func (r *Replica) SetUtilization(u float64) { r.util.Store(math.Float64bits(u)) }

type greeter struct {
	example.Greeter
	r *Replica
}

func (g greeter) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	g.r.Calls.Add(1)
	if g.r.failing.Load() {
		return nil, status.Error(codes.Unavailable, "replica failing (health still SERVING)")
	}
	g.r.inFlight.Add(1)
	defer g.r.inFlight.Add(-1)
	if g.r.sem != nil {
		g.r.sem <- struct{}{}
		defer func() { <-g.r.sem }()
	}
	if d := g.r.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	return g.Greeter.SayHello(ctx, req)
}

// TB is what Start needs of a test or benchmark (testing.TB has it); the
// benchmark report runner supplies its own.
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// Start runs n replicas until the test ends. Every replica sends per-call
// ORCA reports.
func Start(tb TB, n int) []*Replica {
	tb.Helper()
	var rs []*Replica
	for range n {
		r := &Replica{}
		r.SetUtilization(0.1)
		cfg := server.DefaultConfig()
		cfg.Drain.PropagationDelay = time.Millisecond
		cfg.ORCAPerCall = true
		// The replicas share one process and its cores with the test's
		// clients: the adaptive limit would shed for load that is the
		// test's own and blur what these tests measure, the balancing
		// policies (shedding has its own tests in server/ and bench/).
		cfg.Limits.AdaptiveShedding = false
		r.srv, r.Addr = Serve(tb, ExampleService(greeter{r: r}),
			server.WithConfig(cfg),
			server.WithUtilization(func() float64 {
				if r.sem != nil {
					return max(0.01, float64(r.inFlight.Load())/float64(cap(r.sem)))
				}
				return math.Float64frombits(r.util.Load())
			}))
		rs = append(rs, r)
	}
	return rs
}

// ExampleService registers impl as the example.ExampleService, for Serve.
func ExampleService(impl example.ExampleServiceServer) func(*server.Server) {
	return func(s *server.Server) { example.RegisterExampleServiceServer(s, impl) }
}

// Serve runs a kuberpc server with the services register registers, on
// a loopback port, until the test ends (then it is shut down and Serve
// waited for), and returns it and its address. It is built with a
// registry of its own, a logger that discards, and the default
// configuration with a 1 ms drain delay, then opts, which win.
func Serve(tb TB, register func(*server.Server), opts ...server.Option) (*server.Server, string) {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ServeOn(tb, lis, register, opts...), lis.Addr().String()
}

// ServeOn is Serve on lis, a listener of the test's own (one that
// watches the connections it accepts).
func ServeOn(tb TB, lis net.Listener, register func(*server.Server), opts ...server.Option) *server.Server {
	tb.Helper()
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = time.Millisecond
	srv, err := server.New(append([]server.Option{server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
	if err != nil {
		lis.Close()
		tb.Fatal(err)
	}
	register(srv)
	done := make(chan struct{})
	go func() { srv.Serve(lis); close(done) }()
	tb.Cleanup(func() { srv.Shutdown(context.Background()); <-done })
	return srv
}

// Resolver returns a manual resolver (scheme "replicas") that lists rs as
// one endpoint each.
func Resolver(rs []*Replica) *manual.Resolver {
	m := manual.NewBuilderWithScheme("replicas")
	var eps []resolver.Endpoint
	for _, r := range rs {
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: r.Addr}}})
	}
	m.InitialState(resolver.State{Endpoints: eps})
	return m
}

// Reset zeroes every replica's call count.
func Reset(rs []*Replica) {
	for _, r := range rs {
		r.Calls.Store(0)
	}
}
