package client_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
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
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = time.Millisecond
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	example.RegisterExampleServiceServer(srv, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(lis); close(done) }()
	t.Cleanup(func() { srv.Shutdown(context.Background()); <-done })
	return lis.Addr().String()
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
	if !impl.hadDeadline.Load() {
		t.Error("the server saw no deadline; want the client's default deadline")
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
	for _, tc := range []struct {
		name       string
		balancer   string
		config     string
		idempotent []string
		policy     client.RetryPolicy
		want       string // substring of the JSON, or of the error
		wantErr    bool
	}{
		{name: "default balancer", want: `"loadBalancingConfig":[{"round_robin":{}}]`, policy: client.DefaultRetryPolicy},
		{name: "no idempotent methods, no retries", policy: client.DefaultRetryPolicy, want: `{"loadBalancingConfig":[{"round_robin":{}}]}`},
		{name: "method", idempotent: []string{"example.ExampleService/SayHello"}, policy: client.DefaultRetryPolicy,
			want: `"name":[{"service":"example.ExampleService","method":"SayHello"}],"retryPolicy":{"maxAttempts":4,"initialBackoff":"0.05s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}`},
		{name: "whole service, deduplicated", idempotent: []string{"/a.B", "a.B"}, policy: client.DefaultRetryPolicy, want: `"name":[{"service":"a.B"}]`},
		{name: "retries off", idempotent: []string{"a.B/C"}, policy: client.RetryPolicy{MaxAttempts: 1}, want: `{"loadBalancingConfig":[{"round_robin":{}}]}`},
		{name: "balancer config", balancer: "weighted_round_robin", config: `{"enableOobLoadReport":true}`, want: `[{"weighted_round_robin":{"enableOobLoadReport":true}}]`},
		{name: "bad balancer config", balancer: "x", config: `{`, want: "not valid JSON", wantErr: true},
		{name: "bad method name", idempotent: []string{"a.B/C/D"}, policy: client.DefaultRetryPolicy, want: `"a.B/C/D"`, wantErr: true},
		{name: "idempotent is plural", idempotent: []string{"a.B/C", "a.B/D"}, policy: client.DefaultRetryPolicy, want: `"name":[{"service":"a.B","method":"C"},{"service":"a.B","method":"D"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := client.ServiceConfig(tc.balancer, tc.config, tc.idempotent, tc.policy)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid([]byte(got)) || !strings.Contains(got, tc.want) {
				t.Errorf("ServiceConfig = %s\nwant it to contain %s", got, tc.want)
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
