package client

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/kuberpc/kuberpc/internal/refusal"
)

// DefaultRefusalRetries is how many times a unary call a kuberpc server
// refused without processing it (load shedding, its handler cap) is
// retried, on whatever replica the balancer picks next.
const DefaultRefusalRetries = 2

// refusalRetrier retries unary calls that a kuberpc server refused before
// any handler ran. Such a call had no effect, so retrying it is safe for
// every method, idempotent or not (the retry policy covers only
// idempotent ones). The balancer picks again for each attempt, so the
// retry goes elsewhere when there is elsewhere; it waits the delay the
// refusal suggests first. A retry budget (Finagle's) keeps retries from
// multiplying the load when every replica is shedding: each call earns a
// fifth of a retry, each retry spends one, and the balance is capped, so
// retries add at most a fifth to the load over time, after a burst of
// refusalBudget.
type refusalRetrier struct {
	retries int
	// balance is the budget in fifths of a retry: a call earns one, a
	// retry costs refusalRetryCost. Atomic, and only read while full (the
	// usual state), so that calls on many cores do not contend for it.
	balance atomic.Int64
}

const (
	refusalRetryCost = 5                     // a call earns a fifth of a retry
	refusalBudget    = 20 * refusalRetryCost // retries banked at most
)

func newRefusalRetrier(retries int) *refusalRetrier {
	r := &refusalRetrier{retries: retries}
	r.balance.Store(refusalBudget)
	return r
}

// earn credits one call to the budget.
func (r *refusalRetrier) earn() {
	for {
		b := r.balance.Load()
		if b >= refusalBudget || r.balance.CompareAndSwap(b, b+1) {
			return
		}
	}
}

// spend takes one retry from the budget, if it has one.
func (r *refusalRetrier) spend() bool {
	for {
		b := r.balance.Load()
		if b < refusalRetryCost {
			return false
		}
		if r.balance.CompareAndSwap(b, b-refusalRetryCost) {
			return true
		}
	}
}

func (r *refusalRetrier) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	r.earn()
	for attempt := 0; ; attempt++ {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil || attempt >= r.retries {
			return err
		}
		delay, refused := refusal.Is(err)
		if !refused || !r.spend() {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
