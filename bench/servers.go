package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuberpc/kuberpc/balancer/connections"
	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// Conn is a client connection to a server started for a measurement; Close
// stops both.
type Conn struct {
	*grpc.ClientConn
	stop func()
}

// Close closes the connection and stops the server.
func (c *Conn) Close() { c.ClientConn.Close(); c.stop() }

// RawConn serves ExampleService and StreamService on a plain grpc.Server
// and dials it with a plain grpc.ClientConn: the baseline.
func RawConn() (*Conn, error) {
	s := grpc.NewServer()
	return serveAndDial(s, s.Serve, s.Stop, func(target string) (*grpc.ClientConn, error) {
		return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	})
}

// RawTunedConn is RawConn with the transport settings kuberpc's defaults
// choose (server.Transport, client.Dial): the server's static flow-control
// windows and stream workers, the client's windows grpc-go's. Comparing
// kuberpc with it isolates what kuberpc's own work costs.
func RawTunedConn() (*Conn, error) {
	t := server.DefaultConfig().Transport
	s := grpc.NewServer(grpc.InitialWindowSize(t.StreamWindow), grpc.InitialConnWindowSize(t.ConnWindow),
		grpc.NumStreamWorkers(uint32(t.StreamWorkers)))
	return serveAndDial(s, s.Serve, s.Stop, func(target string) (*grpc.ClientConn, error) {
		return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	})
}

// RawTunedConns serves as RawTunedConn does and dials the server n
// times: raw grpc-go with the fast path's connections, chosen as
// client.WithConnectionsPerEndpoint chooses them (package
// balancer/connections).
func RawTunedConns(n int) (*Conns, error) {
	c, err := RawTunedConn()
	if err != nil {
		return nil, err
	}
	p := &Conns{conns: []*grpc.ClientConn{c.ClientConn}, inFlight: make([]atomic.Int64, n), stop: c.Close}
	for range n - 1 {
		cc, err := grpc.NewClient(c.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			p.Close()
			return nil, err
		}
		p.conns = append(p.conns, cc)
	}
	return p, nil
}

// Conns is several connections to one server, used as one.
type Conns struct {
	conns    []*grpc.ClientConn
	inFlight []atomic.Int64
	stop     func()
}

// pick returns the index of the connection to use: the first while it
// has fewer than connections.DefaultSpillAt calls in flight, else the
// one with the fewest, the first on ties.
func (p *Conns) pick() int {
	best := 0
	if p.inFlight[0].Load() < connections.DefaultSpillAt {
		return best
	}
	for i := 1; i < len(p.conns); i++ {
		if p.inFlight[i].Load() < p.inFlight[best].Load() {
			best = i
		}
	}
	return best
}

// Invoke makes a unary call on the least busy connection.
func (p *Conns) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	i := p.pick()
	p.inFlight[i].Add(1)
	defer p.inFlight[i].Add(-1)
	return p.conns[i].Invoke(ctx, method, args, reply, opts...)
}

// NewStream opens a stream on the least busy connection; it counts as in
// flight while it is being opened.
func (p *Conns) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	i := p.pick()
	p.inFlight[i].Add(1)
	defer p.inFlight[i].Add(-1)
	return p.conns[i].NewStream(ctx, desc, method, opts...)
}

// Close closes the connections and stops the server.
func (p *Conns) Close() {
	for _, c := range p.conns[1:] {
		c.Close()
	}
	p.stop()
}

// serveAndDial registers the example services on srv, serves them on a
// loopback listener and dials it; stop stops srv.
func serveAndDial(srv grpc.ServiceRegistrar, serve func(net.Listener) error, stop func(), dial func(target string) (*grpc.ClientConn, error)) (*Conn, error) {
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	example.RegisterStreamServiceServer(srv, example.Greeter{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stop()
		return nil, err
	}
	go serve(lis)
	cc, err := dial("passthrough:///" + lis.Addr().String())
	if err != nil {
		stop()
		return nil, err
	}
	return &Conn{ClientConn: cc, stop: stop}, nil
}

// KuberpcConn serves on the kuberpc runtime and dials with client.Dial,
// both with default options (metrics on, tracing off unless tp is set) and
// then the client options extra.
func KuberpcConn(tp trace.TracerProvider, extra ...client.Option) (*Conn, error) {
	return kuberpcConn(tp, nil, extra)
}

// KuberpcFastConn is KuberpcConn with the fast path on both sides
// (server.WithFastPath, client.WithFastPath).
func KuberpcFastConn() (*Conn, error) {
	return kuberpcConn(nil, []server.Option{server.WithFastPath()}, []client.Option{client.WithFastPath()})
}

func kuberpcConn(tp trace.TracerProvider, sopts []server.Option, extra []client.Option) (*Conn, error) {
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = time.Millisecond
	opts := []server.Option{server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}
	copts := []client.Option{client.WithRegistry(prometheus.NewRegistry())}
	if tp != nil {
		opts = append(opts, server.WithTracerProvider(tp))
		copts = append(copts, client.WithTracerProvider(tp))
	}
	s, err := server.New(append(opts, sopts...)...)
	if err != nil {
		return nil, err
	}
	copts = append(copts, extra...)
	return serveAndDial(s, s.Serve, func() { s.Shutdown(context.Background()) }, func(target string) (*grpc.ClientConn, error) {
		return client.Dial(target, copts...)
	})
}
