package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
	"github.com/kuberpc/kuberpc/server"
)

// forwarder is server A: it answers SayHello by calling server B.
type forwarder struct {
	example.Greeter
	next example.ExampleServiceClient
}

func (f forwarder) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	return f.next.SayHello(ctx, req)
}

func serveTraced(t *testing.T, impl example.ExampleServiceServer, logs *syncBuffer, opts ...server.Option) string {
	t.Helper()
	cfg := quickDrain()
	cfg.RPCLogLevel = slog.LevelInfo
	_, addr := replicas.Serve(t, replicas.ExampleService(impl),
		append([]server.Option{server.WithConfig(cfg), server.WithLogger(slog.New(slog.NewJSONHandler(logs, nil)))}, opts...)...)
	return addr
}

func rpcLogTraceIDs(t *testing.T, logs string) []string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == "rpc" {
			id, _ := rec["trace_id"].(string)
			ids = append(ids, id)
		}
	}
	return ids
}

// TestOneTraceAcrossClientAndTwoServers: client → A → B is one trace, W3C
// trace context carried by kuberpc's client and server whether or not the
// middle server traces itself, and every RPC log line names the trace.
func TestOneTraceAcrossClientAndTwoServers(t *testing.T) {
	for _, middleTraced := range []bool{true, false} {
		name := map[bool]string{true: "A traced", false: "A not traced"}[middleTraced]
		t.Run(name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			var logsA, logsB syncBuffer
			addrB := serveTraced(t, example.Greeter{}, &logsB, server.WithTracerProvider(tp))
			var aClientOpts []client.Option
			var aOpts []server.Option
			if middleTraced {
				aClientOpts = append(aClientOpts, client.WithTracerProvider(tp))
				aOpts = append(aOpts, server.WithTracerProvider(tp))
			}
			ccB, err := client.Dial("passthrough:///"+addrB, append(aClientOpts, client.WithRegistry(prometheus.NewRegistry()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer ccB.Close()
			addrA := serveTraced(t, forwarder{next: example.NewExampleServiceClient(ccB)}, &logsA, aOpts...)
			ccA, err := client.Dial("passthrough:///"+addrA, client.WithTracerProvider(tp), client.WithRegistry(prometheus.NewRegistry()))
			if err != nil {
				t.Fatal(err)
			}
			defer ccA.Close()
			if _, err := example.NewExampleServiceClient(ccA).SayHello(context.Background(), &example.Request{Name: "trace"}); err != nil {
				t.Fatal(err)
			}
			wantSpans := 2 // the client's and B's
			if middleTraced {
				wantSpans = 4 // and A's server and client spans
			}
			// A server span ends after its response is sent: wait for it.
			spans := exp.GetSpans()
			for deadline := time.Now().Add(5 * time.Second); len(spans) < wantSpans && time.Now().Before(deadline); spans = exp.GetSpans() {
				time.Sleep(10 * time.Millisecond)
			}
			if len(spans) != wantSpans {
				t.Fatalf("%d spans, want %d", len(spans), wantSpans)
			}
			ids := map[trace.TraceID]bool{}
			for _, s := range spans {
				ids[s.SpanContext.TraceID()] = true
			}
			if len(ids) != 1 {
				t.Fatalf("spans belong to %d traces, want 1: %v", len(ids), ids)
			}
			var traceID string
			for id := range ids {
				traceID = id.String()
			}
			for srv, logs := range map[string]string{"A": logsA.String(), "B": logsB.String()} {
				got := rpcLogTraceIDs(t, logs)
				if len(got) != 1 || got[0] != traceID {
					t.Errorf("server %s RPC log lines name traces %v, want [%s]", srv, got, traceID)
				}
			}
		})
	}
}

// collector is a fake OTLP trace collector.
type collector struct {
	collectorpb.UnimplementedTraceServiceServer
	mu       sync.Mutex
	services []string
	tenants  []string
	got      chan struct{}
}

func (c *collector) Export(ctx context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c.mu.Lock()
	c.tenants = append(c.tenants, md.Get("x-tenant")...)
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				c.services = append(c.services, a.GetValue().GetStringValue())
			}
		}
	}
	c.mu.Unlock()
	select {
	case c.got <- struct{}{}:
	default:
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// TestOTLPFromStandardVariables: tracing turned on and configured by the
// standard OTEL_* variables: the endpoint URL, the service name, and the
// exporter's own (headers here) reach the collector.
func TestOTLPFromStandardVariables(t *testing.T) {
	col := &collector{got: make(chan struct{}, 1)}
	gs := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(gs, col)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()

	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + lis.Addr().String(), "OTEL_SERVICE_NAME": "checkout", "DRAIN_DELAY": "0"}
	cfg, err := server.LoadConfig(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()), server.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	slis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(slis); close(done) }()
	cc := dial(t, slis.Addr().String())
	if _, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "otlp"}); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown(context.Background()) // flushes the spans
	<-done
	select {
	case <-col.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no spans reached the collector")
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.services) == 0 || col.services[0] != "checkout" {
		t.Errorf("service.name = %v, want checkout (OTEL_SERVICE_NAME)", col.services)
	}
	if len(col.tenants) == 0 || col.tenants[0] != "acme" {
		t.Errorf("collector saw x-tenant %v, want acme (OTEL_EXPORTER_OTLP_HEADERS)", col.tenants)
	}
}
