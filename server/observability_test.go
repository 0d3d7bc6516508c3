package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kuberpc/kuberpc/examples/example"
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
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))), server.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	example.RegisterExampleServiceServer(srv, newTestService())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(lis); close(done) }()
	cc := dial(t, lis.Addr().String())
	c := example.NewExampleServiceClient(cc)
	for range 3 {
		if _, err := c.SayHello(context.Background(), &example.Request{Name: "log"}); err != nil {
			t.Fatal(err)
		}
	}
	c.SayHello(context.Background(), &example.Request{Name: "panic"})
	srv.Shutdown(context.Background())
	<-done

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
