package server_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// ctxStreamService's Greetings waits for its context to end, takes a
// moment to clean up, and records that it returned.
type ctxStreamService struct {
	example.Greeter
	entered  chan struct{}
	returned atomic.Bool
}

func (c *ctxStreamService) Greetings(_ *example.Request, stream example.StreamService_GreetingsServer) error {
	c.entered <- struct{}{}
	<-stream.Context().Done()
	time.Sleep(50 * time.Millisecond) // cleanup after cancellation
	c.returned.Store(true)
	return stream.Context().Err()
}

func startCtxService(t *testing.T, cfg server.Config, opts ...server.Option) (*server.Server, *ctxStreamService, example.StreamServiceClient) {
	t.Helper()
	srv, err := server.New(append([]server.Option{server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(discardLogger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	svc := &ctxStreamService{entered: make(chan struct{}, 1)}
	example.RegisterStreamServiceServer(srv, svc)
	return srv, svc, example.NewStreamServiceClient(dial(t, serveLoopback(t, srv)))
}

// TestDrainTimeoutCancelsHandlerContext: at the drain timeout the stream
// handler's own context is cancelled, the handler returns on grpc-go's
// goroutine, and only then does the client get UNAVAILABLE naming the
// timeout: no handler is left running behind a finished RPC.
func TestDrainTimeoutCancelsHandlerContext(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Drain = server.Drain{PropagationDelay: 10 * time.Millisecond, Timeout: 200 * time.Millisecond}
	srv, svc, client := startCtxService(t, cfg)
	stream, err := client.Greetings(context.Background(), &example.Request{Name: "x", Id: 1})
	if err != nil {
		t.Fatal(err)
	}
	<-svc.entered
	if err := srv.Shutdown(context.Background()); !errors.Is(err, server.ErrDrainTimeout) {
		t.Errorf("Shutdown = %v, want ErrDrainTimeout", err)
	}
	_, err = stream.Recv()
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "drain timeout (DRAIN_TIMEOUT=200ms) exceeded") {
		t.Errorf("stream ended with %v; want UNAVAILABLE naming the drain timeout", err)
	}
	if !svc.returned.Load() {
		t.Error("the RPC ended while its handler was still running")
	}
}

// TestShutdownContextCutsTheDrain: Shutdown's context, once done, ends
// the wait for a stream that would hold the drain to its timeout, as the
// timeout would: the handler's context is cancelled, the stream ends with
// UNAVAILABLE saying why, and Shutdown returns ErrDrainCut with the
// context's cause.
func TestShutdownContextCutsTheDrain(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Drain = server.Drain{PropagationDelay: 10 * time.Millisecond, Timeout: time.Minute}
	srv, svc, client := startCtxService(t, cfg)
	stream, err := client.Greetings(context.Background(), &example.Request{Name: "x", Id: 1})
	if err != nil {
		t.Fatal(err)
	}
	<-svc.entered
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(200*time.Millisecond, func() { cancel(errors.New("operator said so")) })
	begin := time.Now()
	err = srv.Shutdown(ctx)
	if !errors.Is(err, server.ErrDrainCut) || !strings.Contains(err.Error(), "operator said so") {
		t.Errorf("Shutdown = %v, want ErrDrainCut with the context's cause", err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("Shutdown took %v; want it to end soon after its context (the drain timeout is a minute)", took)
	}
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "drain cut short (operator said so)") {
		t.Errorf("stream ended with %v, want UNAVAILABLE saying the drain was cut short", err)
	}
	if !svc.returned.Load() {
		t.Error("the RPC ended while its handler was still running")
	}
}

// TestLongLivedStreamsEndAtGracefulStop: a stream declared long-lived
// ends with UNAVAILABLE when the graceful stop begins, so the drain
// finishes without waiting for its timeout.
func TestLongLivedStreamsEndAtGracefulStop(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Drain = server.Drain{PropagationDelay: 10 * time.Millisecond, Timeout: time.Minute}
	srv, svc, client := startCtxService(t, cfg, server.WithLongLivedStreams("example.StreamService/Greetings"))
	stream, err := client.Greetings(context.Background(), &example.Request{Name: "x", Id: 1})
	if err != nil {
		t.Fatal(err)
	}
	<-svc.entered
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown = %v, want a clean drain", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the drain waited for the long-lived stream")
	}
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "draining") {
		t.Errorf("long-lived stream ended with %v; want UNAVAILABLE saying the server drains", err)
	}
}
