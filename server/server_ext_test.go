package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

func TestMain(m *testing.M) {
	if os.Getenv(stuckServerEnv) != "" {
		os.Exit(runStuckServer()) // a child process of TestDrainEndsOnTimeWithAStuckHandler
	}
	if os.Getenv(hostileServerEnv) != "" {
		os.Exit(runHostileServer()) // a child process of the hostile-client tests
	}
	goleak.VerifyTestMain(m,
		// The OpenTelemetry global delegate and grpc's internal goroutines
		// outlive individual tests by design.
		goleak.IgnoreAnyFunction("go.opentelemetry.io/otel/sdk/trace.(*batchSpanProcessor).processQueue"),
	)
}

// testService is ExampleService and StreamService with hooks: names that
// panic, block until released, sleep, burn CPU or wait on a dependency.
type testService struct {
	example.Greeter
	release chan struct{} // "block" waits on it
	entered chan struct{} // "block" signals here once running
	calls   atomic.Int32  // SayHello handlers run
	// dependency is how long "dependency" waits on a simulated
	// downstream call (until its context ends).
	dependency atomic.Int64
}

func newTestService() *testService {
	return &testService{release: make(chan struct{}), entered: make(chan struct{}, 16)}
}

func (t *testService) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	t.calls.Add(1)
	switch req.GetName() {
	case "panic":
		panic("handler bug")
	case "block":
		t.entered <- struct{}{}
		<-t.release
	case "bigerr":
		return nil, status.Error(codes.InvalidArgument, "bad input: "+strings.Repeat("x", 100_000))
	case "slowfail":
		time.Sleep(60 * time.Millisecond)
		return nil, status.Error(codes.Internal, "failed slowly")
	case "dependency":
		select {
		case <-time.After(time.Duration(t.dependency.Load())):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	case "burn":
		for end := time.Now().Add(time.Millisecond); time.Now().Before(end); {
		}
	}
	return t.Greeter.SayHello(ctx, req)
}

type fixture struct {
	srv      *server.Server
	addr     string
	reg      *prometheus.Registry
	served   chan error
	cc       *grpc.ClientConn
	svc      *testService
	shutdown sync.Once
}

// start serves a testService with cfg and opts (after the fixture's
// registry and logger) on a loopback port, and dials it with grpc-go.
func start(t *testing.T, cfg server.Config, opts ...server.Option) *fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := server.New(append([]server.Option{server.WithConfig(cfg), server.WithRegistry(reg),
		server.WithLogger(discardLogger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	svc := newTestService()
	example.RegisterExampleServiceServer(srv, svc)
	example.RegisterStreamServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, addr: lis.Addr().String(), reg: reg, served: make(chan error, 1), svc: svc}
	go func() { f.served <- srv.Serve(lis) }()
	f.cc = dial(t, f.addr)
	t.Cleanup(func() {
		f.stop(t)
	})
	return f
}

func (f *fixture) stop(t *testing.T) {
	f.shutdown.Do(func() {
		f.srv.Shutdown(context.Background())
		if err := <-f.served; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
}

// serveLoopback serves srv on a loopback port until the test ends, then
// drains it and checks that Serve returned nil; it returns the address.
func serveLoopback(t *testing.T, srv *server.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
	return lis.Addr().String()
}

// discardLogger is a logger that writes nothing.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func quickDrain() server.Config {
	c := server.DefaultConfig()
	c.Drain = server.Drain{PropagationDelay: 300 * time.Millisecond, Timeout: 5 * time.Second}
	return c
}

func TestSayHello(t *testing.T) {
	t.Parallel()
	f := start(t, quickDrain())
	resp, err := example.NewExampleServiceClient(f.cc).SayHello(context.Background(), &example.Request{Id: 1, Name: "kuberpc"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetMessage(), "Hello, kuberpc!"; got != want {
		t.Errorf("SayHello = %q, want %q", got, want)
	}
}

func TestHealthPerService(t *testing.T) {
	t.Parallel()
	f := start(t, quickDrain())
	hc := healthpb.NewHealthClient(f.cc)
	for _, svc := range []string{"", "example.ExampleService", "example.StreamService"} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q): %v", svc, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", svc, resp.GetStatus())
		}
	}
	_, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "no.Such"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Check(unknown service) = %v, want NotFound", err)
	}
}

func TestDrainFlipsHealthAndFinishesInFlight(t *testing.T) {
	t.Parallel()
	f := start(t, quickDrain())
	ctx := context.Background()
	hc := healthpb.NewHealthClient(f.cc)
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "example.ExampleService"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first health status = %v, %v; want SERVING", st, err)
	}

	// An unary RPC in flight, blocked in its handler.
	unaryDone := make(chan error, 1)
	go func() {
		resp, err := example.NewExampleServiceClient(f.cc).SayHello(ctx, &example.Request{Name: "block"})
		if err == nil && resp.GetMessage() != "Hello, block!" {
			err = errors.New("wrong message " + resp.GetMessage())
		}
		unaryDone <- err
	}()
	<-f.svc.entered

	// A bidi stream, open.
	chat, err := example.NewStreamServiceClient(f.cc).Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.Send(&example.Request{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	if r, err := chat.Recv(); err != nil || r.GetMessage() != "Hello, before!" {
		t.Fatalf("chat before drain: %v, %v", r, err)
	}

	drained := make(chan error, 1)
	begin := time.Now()
	go func() { drained <- f.srv.Shutdown(ctx) }()

	st, err := watch.Recv()
	if err != nil || st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after drain start = %v, %v; want NOT_SERVING", st, err)
	}
	if time.Since(begin) > 250*time.Millisecond {
		t.Errorf("NOT_SERVING took %v, want it before the propagation delay ends", time.Since(begin))
	}
	// During the propagation delay new RPCs are still served.
	if _, err := example.NewExampleServiceClient(f.cc).SayHello(ctx, &example.Request{Name: "late"}); err != nil {
		t.Errorf("RPC during propagation delay: %v", err)
	}
	rr := httptest.NewRecorder()
	f.srv.HTTPHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/readyz", nil))
	if rr.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during drain = %d, want 503", rr.Code)
	}

	// After the delay GracefulStop starts: new connections are refused...
	time.Sleep(500 * time.Millisecond)
	conn, err := net.DialTimeout("tcp", f.addr, time.Second)
	if err == nil {
		conn.Close()
		t.Errorf("new TCP connection accepted after GracefulStop began")
	}
	// ...while the stream keeps working and the unary RPC finishes.
	if err := chat.Send(&example.Request{Name: "during"}); err != nil {
		t.Fatalf("chat send during drain: %v", err)
	}
	if r, err := chat.Recv(); err != nil || r.GetMessage() != "Hello, during!" {
		t.Fatalf("chat during drain: %v, %v", r, err)
	}
	close(f.svc.release)
	if err := <-unaryDone; err != nil {
		t.Errorf("in-flight unary RPC failed during drain: %v", err)
	}
	if err := chat.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := chat.Recv(); err != io.EOF {
		t.Errorf("chat end = %v, want io.EOF", err)
	}
	if err := <-drained; err != nil {
		t.Errorf("Shutdown = %v, want nil (everything finished in time)", err)
	}
}

func TestDrainTimeoutCancelsStuckStream(t *testing.T) {
	t.Parallel()
	cfg := quickDrain()
	cfg.Drain = server.Drain{PropagationDelay: 10 * time.Millisecond, Timeout: 300 * time.Millisecond}
	f := start(t, cfg)
	ctx := context.Background()
	// The client never sends or closes: the handler is stuck in Recv.
	chat, err := example.NewStreamServiceClient(f.cc).Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.Send(&example.Request{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := chat.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Shutdown(ctx); !errors.Is(err, server.ErrDrainTimeout) {
		t.Errorf("Shutdown = %v, want ErrDrainTimeout", err)
	}
	// A handler blocked in Recv cannot see its context; the hard stop
	// closes the connection under it, which ends the stream with
	// UNAVAILABLE and unblocks the handler (goleak checks it returned).
	_, err = chat.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable {
		t.Errorf("stuck stream ended with %v, want UNAVAILABLE", err)
	}
}

func TestPanicReturnsInternalAndServerStaysUp(t *testing.T) {
	t.Parallel()
	f := start(t, quickDrain())
	c := example.NewExampleServiceClient(f.cc)
	_, err := c.SayHello(context.Background(), &example.Request{Name: "panic"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panicking handler = %v, want INTERNAL", err)
	}
	if strings.Contains(err.Error(), "handler bug") {
		t.Errorf("panic value leaked to the client: %v", err)
	}
	if _, err := c.SayHello(context.Background(), &example.Request{Name: "after"}); err != nil {
		t.Errorf("RPC after panic: %v", err)
	}
}

func TestOversizedMessage(t *testing.T) {
	t.Parallel()
	cfg := quickDrain()
	cfg.Limits.MaxRecvMsgSize = 1024
	f := start(t, cfg)
	_, err := example.NewExampleServiceClient(f.cc).SayHello(context.Background(),
		&example.Request{Name: strings.Repeat("x", 2048)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized request = %v, want RESOURCE_EXHAUSTED", err)
	}
	if _, err := example.NewExampleServiceClient(f.cc).SayHello(context.Background(), &example.Request{Name: "ok"}); err != nil {
		t.Errorf("small request after oversized one: %v", err)
	}
}

func TestLoadShedding(t *testing.T) {
	t.Parallel()
	cfg := quickDrain()
	cfg.Limits.MaxInFlight = 1
	f := start(t, cfg)
	c := example.NewExampleServiceClient(f.cc)
	done := make(chan error, 1)
	go func() {
		_, err := c.SayHello(context.Background(), &example.Request{Name: "block"})
		done <- err
	}()
	<-f.svc.entered
	_, err := c.SayHello(context.Background(), &example.Request{Name: "shed"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "MAX_IN_FLIGHT") {
		t.Errorf("RPC over the in-flight limit = %v, want UNAVAILABLE naming MAX_IN_FLIGHT", err)
	}
	close(f.svc.release)
	if err := <-done; err != nil {
		t.Errorf("RPC under the limit: %v", err)
	}
}

func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	f := start(t, quickDrain())
	hs := httptest.NewServer(f.srv.HTTPHandler())
	defer hs.Close()
	c := example.NewExampleServiceClient(f.cc)
	before := scrape(t, hs.URL)
	for i := range 5 {
		if _, err := c.SayHello(context.Background(), &example.Request{Id: int32(i), Name: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	c.SayHello(context.Background(), &example.Request{Name: "panic"})
	after := scrape(t, hs.URL)

	ok := map[string]string{"grpc_service": "example.ExampleService", "grpc_method": "SayHello", "grpc_code": "OK"}
	internal := map[string]string{"grpc_service": "example.ExampleService", "grpc_method": "SayHello", "grpc_code": "Internal"}
	if d := value(after, "grpc_server_handled_total", ok) - value(before, "grpc_server_handled_total", ok); d != 5 {
		t.Errorf("grpc_server_handled_total{code=OK} moved by %v, want 5", d)
	}
	if d := value(after, "grpc_server_handled_total", internal) - value(before, "grpc_server_handled_total", internal); d != 1 {
		t.Errorf("grpc_server_handled_total{code=Internal} moved by %v, want 1", d)
	}
	sel := map[string]string{"grpc_method": "SayHello"}
	if n := histCount(after, "grpc_server_handling_seconds", sel); n != 6 {
		t.Errorf("grpc_server_handling_seconds count = %d, want 6", n)
	}
	if v := value(after, "grpc_server_in_flight", sel); v != 0 {
		t.Errorf("grpc_server_in_flight = %v after all RPCs ended, want 0", v)
	}
	resp, err := http.Get(hs.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz = %d while serving, want 200", resp.StatusCode)
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func matching(fams map[string]*dto.MetricFamily, name string, labels map[string]string) []*dto.Metric {
	var out []*dto.Metric
	fam, ok := fams[name]
	if !ok {
		return nil
	}
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	var sum float64
	for _, m := range matching(fams, name, labels) {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

func histCount(fams map[string]*dto.MetricFamily, name string, labels map[string]string) uint64 {
	var n uint64
	for _, m := range matching(fams, name, labels) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}
