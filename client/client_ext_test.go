package client_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
	"github.com/kuberpc/kuberpc/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// flaky fails the first `fail` SayHello calls with UNAVAILABLE and reports
// whether the call carried a deadline.
type flaky struct {
	example.Greeter
	fail        atomic.Int32
	calls       atomic.Int32
	hadDeadline atomic.Bool
}

func (f *flaky) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	f.calls.Add(1)
	_, ok := ctx.Deadline()
	f.hadDeadline.Store(ok)
	if f.fail.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "try another replica")
	}
	return f.Greeter.SayHello(ctx, req)
}

func serve(t *testing.T, impl example.ExampleServiceServer) string {
	t.Helper()
	_, addr := replicas.Serve(t, replicas.ExampleService(impl))
	return addr
}

func serveConfig(t *testing.T, cfg server.Config, impl example.ExampleServiceServer) string {
	t.Helper()
	_, addr := replicas.Serve(t, replicas.ExampleService(impl), server.WithConfig(cfg))
	return addr
}

func TestDialRetriesIdempotentMethods(t *testing.T) {
	t.Parallel()
	impl := &flaky{}
	impl.fail.Store(2)
	addr := serve(t, impl)
	reg := prometheus.NewRegistry()
	cc, err := client.Dial("passthrough:///"+addr, client.WithRegistry(reg),
		client.WithIdempotentMethods("example.ExampleService/SayHello"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "retry"})
	if err != nil {
		t.Fatalf("SayHello with two UNAVAILABLE then OK = %v, want success after retries", err)
	}
	if resp.GetMessage() != "Hello, retry!" || impl.calls.Load() != 3 {
		t.Errorf("got %q after %d calls, want the greeting after 3", resp.GetMessage(), impl.calls.Load())
	}
	if n := testutil.CollectAndCount(reg, "grpc_client_handled_total"); n == 0 {
		t.Error("no grpc_client_handled_total series after an RPC")
	}
}

func TestDialDoesNotRetryOtherMethods(t *testing.T) {
	t.Parallel()
	impl := &flaky{}
	impl.fail.Store(1)
	addr := serve(t, impl)
	cc, err := client.Dial("passthrough:///"+addr, client.WithoutMetrics(), client.WithDefaultDeadline(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "once"})
	if status.Code(err) != codes.Unavailable || impl.calls.Load() != 1 {
		t.Errorf("non-idempotent SayHello = %v after %d calls, want UNAVAILABLE after 1", err, impl.calls.Load())
	}
	if impl.hadDeadline.Load() {
		t.Error("server saw a deadline with WithDefaultDeadline(0)")
	}
}

func TestDialDNS(t *testing.T) {
	t.Parallel()
	addr := serve(t, example.Greeter{})
	_, port, _ := net.SplitHostPort(addr)
	cc, err := client.Dial("dns:///127.0.0.1:"+port, client.WithoutMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "dns"}); err != nil {
		t.Fatal(err)
	}
}

func TestServiceConfig(t *testing.T) {
	t.Parallel()
	retry := `"retryPolicy":{"maxAttempts":4,"initialBackoff":"0.05s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}`
	hedge := client.HedgingPolicy{MaxAttempts: 2, Delay: 10 * time.Millisecond}
	for _, tc := range []struct {
		name    string
		opts    []client.Option
		want    string // substring of the JSON, or of the error
		notWant string
		wantErr bool
	}{
		{name: "default balancer", want: `"loadBalancingConfig":[{"round_robin":{}}]`},
		{name: "no idempotent methods, no retries", want: `{"loadBalancingConfig":[{"round_robin":{}}]}`},
		{name: "method", opts: []client.Option{client.WithIdempotentMethods("example.ExampleService/SayHello")},
			want: `"name":[{"service":"example.ExampleService","method":"SayHello"}],` + retry},
		{name: "whole service, deduplicated", opts: []client.Option{client.WithIdempotentMethods("/a.B", "a.B")}, want: `"name":[{"service":"a.B"}]`},
		{name: "retries off", opts: []client.Option{client.WithIdempotentMethods("a.B/C"), client.WithRetryPolicy(client.RetryPolicy{MaxAttempts: 1})}, want: `{"loadBalancingConfig":[{"round_robin":{}}]}`},
		{name: "balancer config", opts: []client.Option{client.WithBalancer("weighted_round_robin", `{"enableOobLoadReport":true}`)}, want: `[{"weighted_round_robin":{"enableOobLoadReport":true}}]`},
		{name: "bad balancer config", opts: []client.Option{client.WithBalancer("x", `{`)}, want: "not valid JSON", wantErr: true},
		{name: "bad method name", opts: []client.Option{client.WithIdempotentMethods("a.B/C/D")}, want: `"a.B/C/D"`, wantErr: true},
		{name: "idempotent is plural", opts: []client.Option{client.WithIdempotentMethods("a.B/C", "a.B/D")}, want: `"name":[{"service":"a.B","method":"C"},{"service":"a.B","method":"D"}]`},
		// A hedged method is never also retried.
		{name: "service-wide hedging, idempotent method", opts: []client.Option{client.WithIdempotentMethods("a.B/C"), client.WithHedging(hedge, "a.B")},
			notWant: "retryPolicy"},
		{name: "hedged method in a retried service", opts: []client.Option{client.WithIdempotentMethods("a.B"), client.WithHedging(hedge, "a.B/C")},
			want: `{"name":[{"service":"a.B"}],` + retry + `},{"name":[{"service":"a.B","method":"C"}]}`},
		{name: "method timeout", opts: []client.Option{client.WithMethodTimeout(1500*time.Millisecond, "a.B/C")},
			want: `"methodConfig":[{"name":[{"service":"a.B","method":"C"}],"timeout":"1.5s"}]`},
		{name: "service timeout carried into a method's entry", opts: []client.Option{client.WithMethodTimeout(time.Second, "a.B"), client.WithIdempotentMethods("a.B/C")},
			want: `{"name":[{"service":"a.B"}],"timeout":"1s"},{"name":[{"service":"a.B","method":"C"}],"timeout":"1s",` + retry + `}`},
		{name: "outlier detection wraps the balancer", opts: []client.Option{client.WithBalancer("p2c_ewma", `{"decay":"5s"}`), client.WithOutlierDetection(client.DefaultOutlierDetection)},
			want: `"loadBalancingConfig":[{"kuberpc_outlier_detection":{"baseEjectionTime":"5s","childPolicy":[{"p2c_ewma":{"decay":"5s"}}],"consecutiveFailures":5,`},
		{name: "zero timeout", opts: []client.Option{client.WithMethodTimeout(0, "a.B")}, want: "must be positive", wantErr: true},
		{name: "one connection per endpoint is no wrapper", opts: []client.Option{client.WithConnectionsPerEndpoint(1)}, want: `{"loadBalancingConfig":[{"round_robin":{}}]}`},
		{name: "connections per endpoint inside outlier detection", opts: []client.Option{client.WithBalancer("p2c_ewma", ""), client.WithConnectionsPerEndpoint(3), client.WithOutlierDetection(client.DefaultOutlierDetection)},
			want: `"childPolicy":[{"kuberpc_connections":{"childPolicy":[{"p2c_ewma":{}}],"perEndpoint":3}}]`},
		{name: "the fast path's two connections", opts: []client.Option{client.WithFastPath()}, want: `"perEndpoint":2`},
		{name: "a later setting wins over the fast path's", opts: []client.Option{client.WithFastPath(), client.WithConnectionsPerEndpoint(1)}, notWant: "kuberpc_connections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := client.ServiceConfig(append([]client.Option{client.WithoutOutlierDetection()}, tc.opts...)...)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid([]byte(got)) || !strings.Contains(got, tc.want) || (tc.notWant != "" && strings.Contains(got, tc.notWant)) {
				t.Errorf("ServiceConfig = %s\nwant it to contain %s and not %q", got, tc.want, tc.notWant)
			}
		})
	}
}

func TestDialRejectsBadOptions(t *testing.T) {
	t.Parallel()
	if _, err := client.Dial("passthrough:///x", client.WithBalancer("round_robin", "{nope")); err == nil {
		t.Error("Dial with malformed balancer JSON succeeded")
	}
	if _, err := client.Dial("passthrough:///x", client.WithDefaultDeadline(-time.Second)); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("Dial with negative deadline = %v, want an error saying negative", err)
	}
	if _, err := client.Dial("passthrough:///x", client.WithBalancer("no_such_policy", "")); err == nil || !strings.Contains(err.Error(), "no_such_policy") {
		t.Errorf("Dial with unknown balancer = %v, want an error naming it", err)
	}
	// A retry policy is refused by grpc-go only once a method uses it,
	// and then with grpc-go's words; with no idempotent method named it
	// passed unseen. Dial names the field.
	withCodes := func(c ...string) client.RetryPolicy { p := client.DefaultRetryPolicy; p.Codes = c; return p }
	for _, tc := range []struct {
		name string
		opts []client.Option
		want string
	}{
		{"retry attempts 0", []client.Option{client.WithRetryPolicy(client.RetryPolicy{})}, "retry policy: MaxAttempts 0"},
		{"retry without back-off", []client.Option{client.WithRetryPolicy(client.RetryPolicy{MaxAttempts: 3})}, "retry policy: InitialBackoff 0s"},
		{"retry without back-off, a method named", []client.Option{client.WithRetryPolicy(client.RetryPolicy{MaxAttempts: 3}), client.WithIdempotentMethods("a.B/C")}, "retry policy: InitialBackoff 0s"},
		{"retry no codes", []client.Option{client.WithRetryPolicy(withCodes())}, "retry policy: Codes: empty"},
		{"retry unknown code", []client.Option{client.WithRetryPolicy(withCodes("UNAVAILABLE", "NOPE"))}, `retry policy: Codes: "NOPE"`},
		{"retry OK", []client.Option{client.WithRetryPolicy(withCodes("OK"))}, `retry policy: Codes: "OK"`},
		{"hedging no method", []client.Option{client.WithHedging(client.HedgingPolicy{MaxAttempts: 2})}, "WithHedging names no method"},
		{"hedging attempts", []client.Option{client.WithHedging(client.HedgingPolicy{MaxAttempts: 9}, "a.B/C")}, "MaxAttempts 9, want 2-5"},
		{"hedging negative delay", []client.Option{client.WithHedging(client.HedgingPolicy{MaxAttempts: 2, Delay: -time.Second}, "a.B/C")}, "Delay -1s, want 0 or more"},
	} {
		if _, err := client.Dial("passthrough:///x", tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Dial = %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	for _, p := range []client.RetryPolicy{{MaxAttempts: 1}, withCodes("UNAVAILABLE", "RESOURCE_EXHAUSTED")} {
		cc, err := client.Dial("passthrough:///x", client.WithRetryPolicy(p), client.WithIdempotentMethods("a.B/C"))
		if err != nil {
			t.Errorf("Dial with retry policy %+v: %v", p, err)
			continue
		}
		cc.Close()
	}
}

// slowFirst makes the first SayHello slow and the others fast.
type slowFirst struct {
	example.Greeter
	calls atomic.Int32
}

func (s *slowFirst) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	if s.calls.Add(1) == 1 {
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Greeter.SayHello(ctx, req)
}

func TestHedgingCutsTheTail(t *testing.T) {
	t.Parallel()
	impl := &slowFirst{}
	addr := serve(t, impl)
	reg := prometheus.NewRegistry()
	cc, err := client.Dial("passthrough:///"+addr, client.WithRegistry(reg), client.WithPickMetrics(),
		client.WithHedging(client.HedgingPolicy{MaxAttempts: 2, Delay: 50 * time.Millisecond}, "example.ExampleService/SayHello"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	start := time.Now()
	if _, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "hedge"}); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("hedged call took %v; the hedge after 50ms should have answered", el)
	}
	if n := impl.calls.Load(); n != 2 {
		t.Errorf("server saw %d calls, want 2 (the original and one hedge)", n)
	}
	// Picks per endpoint: both copies went to the one endpoint.
	if got := testutil.ToFloat64(mustCounter(t, reg, addr)); got != 2 {
		t.Errorf("kuberpc_client_picks_total{endpoint=%q} = %v, want 2", addr, got)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, addr string) prometheus.Collector {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "kuberpc_client_picks_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "endpoint" && l.GetValue() == addr {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("no kuberpc_client_picks_total series for %s", addr)
	return nil
}

// TestHedgedMethodIsNotRetried: with the service retried and the method
// hedged, a failing call is sent MaxAttempts times by the hedger, never
// multiplied by the retry policy.
func TestHedgedMethodIsNotRetried(t *testing.T) {
	t.Parallel()
	impl := &flaky{}
	impl.fail.Store(100)
	addr := serve(t, impl)
	cc, err := client.Dial("passthrough:///"+addr, client.WithRegistry(prometheus.NewRegistry()),
		client.WithIdempotentMethods("example.ExampleService"),
		client.WithHedging(client.HedgingPolicy{MaxAttempts: 2, Delay: time.Millisecond}, "example.ExampleService/SayHello"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "x"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("SayHello = %v, want UNAVAILABLE", err)
	}
	if n := impl.calls.Load(); n != 2 {
		t.Errorf("the server saw %d attempts; want 2 (the hedging policy's), not hedges × retries", n)
	}
}

// TestMethodTimeoutAndInterceptorOptions: a per-method timeout reaches
// the server as the call's deadline, and user interceptors run.
func TestMethodTimeoutAndInterceptorOptions(t *testing.T) {
	t.Parallel()
	impl := &flaky{}
	addr := serve(t, impl)
	var unary, stream atomic.Int32
	cc, err := client.Dial("passthrough:///"+addr, client.WithRegistry(prometheus.NewRegistry()), client.WithDefaultDeadline(0),
		client.WithMethodTimeout(time.Minute, "example.ExampleService/SayHello"),
		client.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			unary.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		client.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			stream.Add(1)
			return streamer(ctx, desc, cc, method, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if !impl.hadDeadline.Load() {
		t.Error("the per-method timeout did not reach the server as a deadline (default deadline off)")
	}
	if unary.Load() != 1 {
		t.Errorf("unary interceptor ran %d times, want 1", unary.Load())
	}
	if _, err := healthpb.NewHealthClient(cc).Watch(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if stream.Load() != 1 {
		t.Errorf("stream interceptor ran %d times, want 1", stream.Load())
	}
}

// TestPickSeriesDeletedWhenEndpointLeaves: once no connection to an
// endpoint is left, its picks series is gone.
func TestPickSeriesDeletedWhenEndpointLeaves(t *testing.T) {
	t.Parallel()
	addr := serve(t, &flaky{})
	reg := prometheus.NewRegistry()
	cc, err := client.Dial("passthrough:///"+addr, client.WithRegistry(reg), client.WithPickMetrics())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(mustCounter(t, reg, addr)); got != 1 {
		t.Fatalf("picks = %v, want 1", got)
	}
	cc.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n, err := testutil.GatherAndCount(reg, "kuberpc_client_picks_total")
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d picks series left after the endpoint's last connection closed", n)
		}
	}
}

// blocker holds SayHello calls named "block" until release closes.
type blocker struct {
	example.Greeter
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int32
}

func (b *blocker) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	b.calls.Add(1)
	if req.GetName() == "block" {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.Greeter.SayHello(ctx, req)
}

// connCounter counts the client's established transports.
type connCounter struct{ n atomic.Int32 }

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                         {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		c.n.Add(1)
	}
}

// TestRefusedCallsAreRetriedOnAnotherReplica: a replica shedding load
// (MAX_IN_FLIGHT reached) refuses calls before running them; the client
// retries those on the next replica, for a method that is not
// idempotent, so none fails. With WithRefusalRetries(0) they fail.
func TestRefusedCallsAreRetriedOnAnotherReplica(t *testing.T) {
	t.Parallel()
	busyCfg := server.DefaultConfig()
	busyCfg.Drain.PropagationDelay = time.Millisecond
	busyCfg.Limits.MaxInFlight = 1
	busy := &blocker{entered: make(chan struct{}, 1), release: make(chan struct{})}
	free := &blocker{entered: make(chan struct{}, 1), release: make(chan struct{})}
	busyAddr, freeAddr := serveConfig(t, busyCfg, busy), serve(t, free)

	// Fill the busy replica's one slot.
	direct, err := grpc.NewClient(busyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	held := make(chan error, 1)
	go func() {
		_, err := example.NewExampleServiceClient(direct).SayHello(context.Background(), &example.Request{Name: "block"})
		held <- err
	}()
	<-busy.entered
	defer func() { close(busy.release); <-held }()

	for _, tc := range []struct {
		retries    int
		wantFailed bool
	}{{client.DefaultRefusalRetries, false}, {0, true}} {
		r := manual.NewBuilderWithScheme("two")
		r.InitialState(resolver.State{Endpoints: []resolver.Endpoint{
			{Addresses: []resolver.Address{{Addr: busyAddr}}}, {Addresses: []resolver.Address{{Addr: freeAddr}}},
		}})
		conns := &connCounter{}
		cc, err := client.Dial("two:///x", client.WithoutMetrics(), client.WithRefusalRetries(tc.retries),
			client.WithoutOutlierDetection(), client.WithDialOptions(grpc.WithResolvers(r), grpc.WithStatsHandler(conns)))
		if err != nil {
			t.Fatal(err)
		}
		// Both replicas connected first: while only the busy one is, every
		// retry can only go back to it (CI once failed 1 of 20 so).
		cc.Connect()
		for deadline := time.Now().Add(10 * time.Second); conns.n.Load() < 2; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d of 2 replicas connected after 10s", conns.n.Load())
			}
		}
		time.Sleep(100 * time.Millisecond) // the balancer's picker follows the subchannels' READY
		failed := 0
		for range 20 {
			_, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "x"})
			if err != nil {
				if status.Code(err) != codes.Unavailable {
					t.Errorf("refused call failed with %v, want UNAVAILABLE", err)
				}
				failed++
			}
		}
		cc.Close()
		if (failed > 0) != tc.wantFailed {
			t.Errorf("WithRefusalRetries(%d): %d of 20 calls failed; want failures: %v", tc.retries, failed, tc.wantFailed)
		}
	}
	if busy.calls.Load() != 1 {
		t.Errorf("the busy replica ran %d handlers; want only the held one (refusals run nothing)", busy.calls.Load())
	}
}

// TestABurstOnAFailingReplicaIsRetried: one of 5 replicas fails every
// call while its health says SERVING, and 50 calls start at once, 10 of
// them on it. Every one is retried elsewhere, none fails: the retry
// budget must cover the failures that come before outlier detection has
// seen its 5 in a row, and a burst brings them together. With grpc-go's
// example throttling (10 tokens, retries stop at 5), the fifth failure in
// a row was not retried (CI's e2e failed so once).
func TestABurstOnAFailingReplicaIsRetried(t *testing.T) {
	t.Parallel()
	rs := replicas.Start(t, 5)
	rs[0].SetFailing(true)
	for _, r := range rs[1:] {
		// Healthy calls end after the failing ones: their successes do
		// not refill the budget before the failures are counted.
		r.SetDelay(100 * time.Millisecond)
	}
	conns := &connCounter{}
	cc, err := client.Dial("replicas:///x", client.WithRegistry(prometheus.NewRegistry()),
		client.WithIdempotentMethods("example.ExampleService/SayHello"),
		client.WithDialOptions(grpc.WithResolvers(replicas.Resolver(rs)), grpc.WithStatsHandler(conns)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Connect()
	for deadline := time.Now().Add(10 * time.Second); conns.n.Load() < 5; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 5 replicas connected after 10s", conns.n.Load())
		}
	}
	time.Sleep(100 * time.Millisecond) // the balancer's picker follows the subchannels' READY
	const n = 50
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		go func() {
			<-start
			_, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "x"})
			errs <- err
		}()
	}
	close(start)
	failed := 0
	for range n {
		if err := <-errs; err != nil {
			failed++
			t.Log(err)
		}
	}
	if failed > 0 || rs[0].Calls.Load() < 5 {
		t.Errorf("%d of %d calls failed, the failing replica saw %d; want none failed, and 5 or more attempts there (the burst reached it)", failed, n, rs[0].Calls.Load())
	}
}
