package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
	"github.com/kuberpc/kuberpc/server"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRPCLogLinesAndTraces checks one JSON log line per RPC at the
// configured level, and a server span per RPC through otelgrpc.
func TestRPCLogLinesAndTraces(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	cfg := quickDrain()
	cfg.RPCLogLevel = slog.LevelInfo
	srv, addr := replicas.Serve(t, replicas.ExampleService(newTestService()), server.WithConfig(cfg),
		server.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))), server.WithTracerProvider(tp))
	cc := dial(t, addr)
	c := example.NewExampleServiceClient(cc)
	for range 3 {
		if _, err := c.SayHello(context.Background(), &example.Request{Name: "log"}); err != nil {
			t.Fatal(err)
		}
	}
	c.SayHello(context.Background(), &example.Request{Name: "panic"})
	srv.Shutdown(context.Background()) // every RPC logged and its span ended

	var rpcLines, warn int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["msg"] != "rpc" {
			continue
		}
		if rec["method"] != "/example.ExampleService/SayHello" || rec["duration"] == nil {
			t.Errorf("rpc line without method or duration: %v", rec)
		}
		rpcLines++
		if rec["code"] == "Internal" && rec["level"] == "WARN" {
			warn++
		}
	}
	if rpcLines != 4 || warn != 1 {
		t.Errorf("got %d rpc lines (%d at WARN for INTERNAL), want 4 and 1:\n%s", rpcLines, warn, logs.String())
	}
	spans := 0
	for _, s := range exp.GetSpans() {
		if s.Name == "example.ExampleService/SayHello" {
			spans++
		}
	}
	if spans != 4 {
		t.Errorf("recorded %d SayHello server spans, want 4", spans)
	}
}

// TestServersShareARegistry: servers in one process may share a registry
// (the default one, when neither sets its own, as in a user's tests): the
// second must not fail to register its metrics, each server's calls are
// counted in the shared series, and the concurrency-limit gauge is one
// series that goes when the last server has shut down.
func TestServersShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	var conns []*grpc.ClientConn
	var srvs []*server.Server
	for i := range 2 {
		cfg := server.DefaultConfig()
		cfg.Drain.PropagationDelay = 0
		srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(reg),
			server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			t.Fatalf("server %d on a shared registry: %v", i+1, err)
		}
		example.RegisterExampleServiceServer(srv, example.Greeter{})
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(lis)
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		srvs, conns = append(srvs, srv), append(conns, cc)
	}
	for _, cc := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := example.NewExampleServiceClient(cc).SayHello(ctx, &example.Request{Name: "shared"})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP grpc_server_started_total RPCs started on the server.
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpc_server_started_total"); err != nil {
		t.Errorf("calls to both servers in the shared series: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, "kuberpc_server_concurrency_limit"); err != nil || n != 1 {
		t.Errorf("kuberpc_server_concurrency_limit: %d series (%v), want 1", n, err)
	}
	for _, srv := range srvs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		srv.Shutdown(ctx)
		cancel()
	}
	if n, err := testutil.GatherAndCount(reg, "kuberpc_server_concurrency_limit"); err != nil || n != 0 {
		t.Errorf("kuberpc_server_concurrency_limit after both shut down: %d series (%v), want none", n, err)
	}
}
