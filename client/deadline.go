package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The default deadline is a safety net, not a deadline the caller chose,
// so it is kept without grpc-go's per-call cost of one: a context with a
// deadline costs a timer and a timer context on each side, a
// grpc-timeout header to encode and parse, and on the client the map
// grpc-go's own per-call context joins — about 18 allocations and a
// tenth of a small call's throughput. Instead, calls that end within the
// same tick share one context with a real deadline (a "bucket", one
// timer for all of them), and a call sees only its cancellation: it has
// no Deadline, so nothing goes on the wire and the server keeps no
// timer. When the bucket's time comes, grpc-go cancels the call with
// DEADLINE_EXCEEDED and resets its stream, which cancels the handler's
// context on the server. A deadline the caller sets is untouched and
// reaches the server as always.

// deadlineTick is the granularity of default deadlines: a call's safety
// net ends between d and d+deadlineTick after it starts.
const deadlineTick = 100 * time.Millisecond

// deadlineShards spreads the calls of one tick over several buckets, so
// they do not all take one lock to join and leave a bucket: grpc-go's
// per-call context registers with the bucket's under its mutex, and
// back out when the call ends. At 64 calls at once, 8 shards cost 5 %
// more CPU per call than 64 (bench probe: 0.990 and 0.939 of raw
// grpc-go's); each shard holds at most one bucket with its timer.
const deadlineShards = 64

// defaultDeadlines hands out the shared buckets of one default deadline.
type defaultDeadlines struct {
	d       time.Duration
	buckets [deadlineShards]atomic.Pointer[deadlineBucket]
}

// deadlineBucket is a context that ends at a tick, shared by the calls
// whose default deadline ends there.
type deadlineBucket struct {
	ends   time.Time
	ctx    context.Context
	cancel context.CancelFunc // called by nothing: the bucket ends at its deadline
}

func newDefaultDeadlines(d time.Duration) *defaultDeadlines {
	return &defaultDeadlines{d: d}
}

// bucket returns a context whose deadline is d from now, rounded up to
// the next tick.
func (dd *defaultDeadlines) bucket() context.Context {
	ends := time.Now().Add(dd.d + deadlineTick).Truncate(deadlineTick)
	slot := &dd.buckets[rand.Uint32()%deadlineShards]
	for {
		b := slot.Load()
		if b != nil && b.ends.Equal(ends) {
			return b.ctx
		}
		// The bucket's timer cancels it at its end; nothing else does.
		ctx, cancel := context.WithDeadline(context.Background(), ends)
		nb := &deadlineBucket{ends: ends, ctx: ctx, cancel: cancel}
		if slot.CompareAndSwap(b, nb) {
			return ctx
		}
		cancel()
	}
}

// withDefault returns ctx bound by the default deadline, and the function
// that releases it. When ctx cannot be cancelled by anything else (no
// Done channel: context.Background and values on it), the call's context
// is ctx seen through the bucket, at the cost of one small allocation;
// otherwise it is a cancellable child of ctx that the bucket cancels.
func (dd *defaultDeadlines) withDefault(ctx context.Context) (context.Context, func()) {
	b := dd.bucket()
	if ctx.Done() == nil {
		return &bucketed{Context: ctx, bucket: b}, func() {}
	}
	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(b, func() { cancel(errDefaultDeadline) })
	return cctx, func() { stop(); cancel(nil) }
}

// errDefaultDeadline is the cause of a call cancelled by its default
// deadline.
var errDefaultDeadline = errors.New("kuberpc: default deadline exceeded")

// deadlineError turns the cancellation of a call by its default
// deadline, which grpc-go reports as CANCELLED, into DEADLINE_EXCEEDED.
func deadlineError(ctx context.Context, err error) error {
	if err != nil && status.Code(err) == codes.Canceled && context.Cause(ctx) == errDefaultDeadline {
		return status.Errorf(codes.DeadlineExceeded, "kuberpc: default deadline exceeded (see client.WithDefaultDeadline): %v", status.Convert(err).Message())
	}
	return err
}

// bucketed is a context with the values of Context and the cancellation
// of bucket, and no deadline. grpc-go's per-call context joins bucket
// directly (its Value answers for the cancellation bucket carries, and
// its Done is bucket's), so the call costs no goroutine and no timer.
type bucketed struct {
	context.Context
	bucket context.Context
}

func (b *bucketed) Done() <-chan struct{} { return b.bucket.Done() }

func (b *bucketed) Err() error {
	if err := b.Context.Err(); err != nil {
		return err
	}
	return b.bucket.Err()
}

func (b *bucketed) Value(key any) any {
	// The bucket, a context.WithDeadline of Background, answers only for
	// the context package's own key for its cancellation.
	if v := b.bucket.Value(key); v != nil {
		return v
	}
	return b.Context.Value(key)
}
