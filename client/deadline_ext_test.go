package client_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
)

// hanging is a SayHello that answers only "fast" and otherwise waits for
// its context, reporting what the server saw of the call's deadline and
// cancellation.
type hanging struct {
	example.Greeter
	seen chan hangingCall
}

type hangingCall struct {
	hadDeadline bool
	err         error // the handler context's error when it ended
}

func (h *hanging) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	_, ok := ctx.Deadline()
	if req.GetName() == "fast" {
		h.seen <- hangingCall{hadDeadline: ok}
		return h.Greeter.SayHello(ctx, req)
	}
	select {
	case <-ctx.Done():
		h.seen <- hangingCall{hadDeadline: ok, err: ctx.Err()}
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		h.seen <- hangingCall{hadDeadline: ok}
		return nil, status.Error(codes.Internal, "the default deadline never came")
	}
}

type ctxKey struct{}

// TestDefaultDeadline: a call without a deadline of its own fails with
// DEADLINE_EXCEEDED at the default deadline (to its 100ms tick), and the
// server's handler is cancelled then, although it was given no deadline
// (the safety net costs no grpc-timeout and no server timer). This holds
// for a context that nothing else can cancel and for one that can be
// cancelled (a handler's incoming context); cancelling that one still
// cancels the call, as CANCELLED; a deadline the caller sets reaches the
// server.
func TestDefaultDeadline(t *testing.T) {
	t.Parallel()
	impl := &hanging{seen: make(chan hangingCall, 1)}
	addr := serve(t, impl)
	cc, err := client.Dial("passthrough:///"+addr, client.WithoutMetrics(), client.WithDefaultDeadline(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := example.NewExampleServiceClient(cc)
	cancellable, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{
		{"background", context.Background()},
		{"values only", context.WithValue(context.Background(), ctxKey{}, "v")},
		{"cancellable", cancellable},
	} {
		start := time.Now()
		_, err := c.SayHello(tc.ctx, &example.Request{Name: "hang"})
		took := time.Since(start)
		if status.Code(err) != codes.DeadlineExceeded || took < 300*time.Millisecond || took > 2*time.Second {
			t.Errorf("%s: hanging call = %v after %v; want DEADLINE_EXCEEDED after 300-400ms", tc.name, err, took)
		}
		got := <-impl.seen
		if got.hadDeadline || got.err != context.Canceled {
			t.Errorf("%s: server saw deadline %v, handler context ended with %v; want no deadline, cancelled", tc.name, got.hadDeadline, got.err)
		}
	}

	ctx, cancelNow := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancelNow)
	if _, err := c.SayHello(ctx, &example.Request{Name: "hang"}); status.Code(err) != codes.Canceled {
		t.Errorf("call whose context was cancelled = %v; want CANCELLED", err)
	}
	<-impl.seen

	ctx, cancelLater := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelLater()
	if _, err := c.SayHello(ctx, &example.Request{Name: "fast"}); err != nil {
		t.Fatal(err)
	}
	if got := <-impl.seen; !got.hadDeadline {
		t.Error("the caller's own deadline did not reach the server")
	}
	if _, err := c.SayHello(context.Background(), &example.Request{Name: "fast"}); err != nil {
		t.Errorf("fast call under the default deadline = %v", err)
	}
	<-impl.seen
}
