package bench

import (
	"context"
	"fmt"
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
func RawConn() (*Conn, error) { return serveAndDial(rawServer, nil, dialRaw) }

// RawTunedConn is RawConn with the transport settings kuberpc's defaults
// choose (server.Transport, client.Dial): the server's static flow-control
// windows and stream workers, the client's windows grpc-go's. Comparing
// kuberpc with it isolates what kuberpc's own work costs.
func RawTunedConn() (*Conn, error) { return serveAndDial(tunedServer, nil, dialRaw) }

// RawTunedConns serves as RawTunedConn does and dials the server n
// times: raw grpc-go with the fast path's connections, chosen as
// client.WithConnectionsPerEndpoint chooses them (package
// balancer/connections).
func RawTunedConns(n int) (*Conns, error) {
	c, err := RawTunedConn()
	if err != nil {
		return nil, err
	}
	return dialConns(c, n)
}

// dialConns adds n-1 raw connections to c's server.
func dialConns(c *Conn, n int) (*Conns, error) {
	p := &Conns{conns: []*grpc.ClientConn{c.ClientConn}, inFlight: make([]atomic.Int64, n), stop: c.Close}
	for range n - 1 {
		cc, err := dialRaw(c.Target())
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

// A serverKind is one of the servers the overhead sides measure.
type serverKind string

const (
	rawServer     serverKind = "raw"     // grpc.NewServer()
	tunedServer   serverKind = "tuned"   // raw with kuberpc's transport settings
	kuberpcServer serverKind = "kuberpc" // the kuberpc runtime, default options
	fastServer    serverKind = "fast"    // the kuberpc runtime with its fast path
)

// exampleServer is a server of the example services, not yet serving.
type exampleServer struct {
	serve func(net.Listener) error
	stop  func()
}

// newExampleServer makes a server of kind with the example services
// registered on it; tp, if set, traces a kuberpc server's calls.
func newExampleServer(kind serverKind, tp trace.TracerProvider) (exampleServer, error) {
	var srv interface {
		grpc.ServiceRegistrar
		Serve(net.Listener) error
	}
	var stop func()
	switch kind {
	case rawServer:
		s := grpc.NewServer()
		srv, stop = s, s.Stop
	case tunedServer:
		t := server.DefaultConfig().Transport
		s := grpc.NewServer(grpc.InitialWindowSize(t.StreamWindow), grpc.InitialConnWindowSize(t.ConnWindow),
			grpc.NumStreamWorkers(uint32(t.StreamWorkers)))
		srv, stop = s, s.Stop
	case kuberpcServer, fastServer:
		cfg := server.DefaultConfig()
		cfg.Drain.PropagationDelay = time.Millisecond
		opts := []server.Option{server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
			server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}
		if tp != nil {
			opts = append(opts, server.WithTracerProvider(tp))
		}
		if kind == fastServer {
			opts = append(opts, server.WithFastPath())
		}
		s, err := server.New(opts...)
		if err != nil {
			return exampleServer{}, err
		}
		srv, stop = s, func() { s.Shutdown(context.Background()) }
	default:
		return exampleServer{}, fmt.Errorf("no server kind %q (want raw, tuned, kuberpc or fast)", kind)
	}
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	example.RegisterStreamServiceServer(srv, example.Greeter{})
	return exampleServer{serve: srv.Serve, stop: stop}, nil
}

// dialRaw dials target with a plain grpc.ClientConn.
func dialRaw(target string) (*grpc.ClientConn, error) {
	return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// dialKuberpc returns a dialer of client.Dial with default options (metrics
// on, tracing if tp is set) and then extra.
func dialKuberpc(tp trace.TracerProvider, extra ...client.Option) func(target string) (*grpc.ClientConn, error) {
	opts := []client.Option{client.WithRegistry(prometheus.NewRegistry())}
	if tp != nil {
		opts = append(opts, client.WithTracerProvider(tp))
	}
	opts = append(opts, extra...)
	return func(target string) (*grpc.ClientConn, error) { return client.Dial(target, opts...) }
}

// serveAndDial starts a server of kind (traced by tp, if set) on a
// loopback listener and dials it.
func serveAndDial(kind serverKind, tp trace.TracerProvider, dial func(target string) (*grpc.ClientConn, error)) (*Conn, error) {
	srv, err := newExampleServer(kind, tp)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.stop()
		return nil, err
	}
	go srv.serve(lis)
	cc, err := dial("passthrough:///" + lis.Addr().String())
	if err != nil {
		srv.stop()
		return nil, err
	}
	return &Conn{ClientConn: cc, stop: srv.stop}, nil
}

// KuberpcConn serves on the kuberpc runtime and dials with client.Dial,
// both with default options (metrics on, tracing off unless tp is set) and
// then the client options extra.
func KuberpcConn(tp trace.TracerProvider, extra ...client.Option) (*Conn, error) {
	return serveAndDial(kuberpcServer, tp, dialKuberpc(tp, extra...))
}

// KuberpcFastConn is KuberpcConn with the fast path on both sides
// (server.WithFastPath, client.WithFastPath).
func KuberpcFastConn() (*Conn, error) {
	return serveAndDial(fastServer, nil, dialKuberpc(nil, client.WithFastPath()))
}
