package client

import (
	"context"
	"sync"
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

	mu      sync.Mutex
	balance float64
}

const (
	refusalBudget      = 20  // retries banked at most
	refusalBudgetRatio = 0.2 // retries earned per call
)

func newRefusalRetrier(retries int) *refusalRetrier {
	return &refusalRetrier{retries: retries, balance: refusalBudget}
}

// earn credits one call to the budget.
func (r *refusalRetrier) earn() {
	r.mu.Lock()
	r.balance = min(refusalBudget, r.balance+refusalBudgetRatio)
	r.mu.Unlock()
}

// spend takes one retry from the budget, if it has one.
func (r *refusalRetrier) spend() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.balance < 1 {
		return false
	}
	r.balance--
	return true
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
