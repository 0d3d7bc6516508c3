package client

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/internal/refusal"
)

// stubInvoker answers every attempt with err and counts them.
func stubInvoker(err error, attempts *int) grpc.UnaryInvoker {
	return func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		*attempts++
		return err
	}
}

func TestRefusalRetrierRetriesOnlyRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int // attempts
	}{
		{"refused", refusal.New(codes.Unavailable, "shed"), 3},
		{"handler cap", refusal.New(codes.ResourceExhausted, "cap"), 3},
		{"plain UNAVAILABLE (maybe processed)", status.Error(codes.Unavailable, "gone"), 1},
		{"other error", status.Error(codes.Internal, "bug"), 1},
		{"success", nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRefusalRetrier(2)
			n := 0
			err := r.invoke(context.Background(), "/m", nil, nil, nil, stubInvoker(tc.err, &n))
			if n != tc.want || status.Code(err) != status.Code(tc.err) {
				t.Errorf("%d attempts, err %v; want %d attempts and %v", n, err, tc.want, tc.err)
			}
		})
	}
}

// TestRefusalRetryBudget: when every attempt is refused (every replica
// shedding), retries stop once the banked budget is spent, and then come
// at a fifth of the calls: they cannot multiply the load.
func TestRefusalRetryBudget(t *testing.T) {
	r := newRefusalRetrier(2)
	refused := refusal.New(codes.Unavailable, "shed")
	attempts := 0
	const calls = 1000
	for range calls {
		r.invoke(context.Background(), "/m", nil, nil, nil, stubInvoker(refused, &attempts))
	}
	retries := attempts - calls
	if max := float64(refusalBudget)/refusalRetryCost + calls/refusalRetryCost + 1; float64(retries) > max {
		t.Errorf("%d retries for %d refused calls; want at most %.0f (banked budget + a fifth)", retries, calls, max)
	}
	if retries < calls/10 {
		t.Errorf("only %d retries for %d calls; the budget should allow about a fifth", retries, calls)
	}
}

// TestRefusalRetryStopsAtTheDeadline: the wait before a retry ends with
// the call's context.
func TestRefusalRetryStopsAtTheDeadline(t *testing.T) {
	r := newRefusalRetrier(2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	r.invoke(ctx, "/m", nil, nil, nil, stubInvoker(refusal.New(codes.Unavailable, "shed"), &n))
	if n != 1 {
		t.Errorf("%d attempts with the context already done; want 1", n)
	}
}
