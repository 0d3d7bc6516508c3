// Package attempts carries, in a call's context, the endpoints its
// attempts were sent to, so that a retry or a hedge is sent to an
// endpoint the call has not tried yet.
//
// The client puts a Tried in the context of each call whose balancing
// policy honours it (one that called Honour); grpc-go passes that context,
// through every attempt of the call (its retries, transparent or by
// policy; kuberpc's hedges and refusal retries), to the policy's picker,
// which chooses among the READY endpoints the call has not tried
// (Untried) and records its choice (Add). A call that has tried every
// READY endpoint is picked as if it had tried none.
//
// The Tried also says whether the call is a stream (NewStreamContext): a
// stream's length is not a round trip, and policies that learn round
// trips leave streams out.
package attempts

import (
	"context"
	"slices"
	"sync"
)

// Tried is the endpoints, by key, that a call's attempts were sent to.
// It is safe for concurrent use: hedged attempts pick at once.
type Tried struct {
	stream bool // set before the call's first pick, read-only after
	mu     sync.Mutex
	keys   []string
}

// Stream reports whether the call is a stream (client, server or bidi).
func (t *Tried) Stream() bool { return t.stream }

// Add records that an attempt was sent to the endpoint key.
func (t *Tried) Add(key string) {
	t.mu.Lock()
	if !slices.Contains(t.keys, key) {
		t.keys = append(t.keys, key)
	}
	t.mu.Unlock()
}

// Has reports whether an attempt was sent to the endpoint key.
func (t *Tried) Has(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Contains(t.keys, key)
}

// Untried returns the elements of eps whose key (by key) t has not
// recorded, in order: eps itself when t is nil or recorded none of them,
// and eps too when it recorded them all (a call that tried every endpoint
// may try each again).
func Untried[E any](t *Tried, eps []E, key func(*E) string) []E {
	if t == nil {
		return eps
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.keys) == 0 {
		return eps
	}
	var out []E
	for i := range eps {
		if !slices.Contains(t.keys, key(&eps[i])) {
			if out == nil {
				out = make([]E, 0, len(eps)-1)
			}
			out = append(out, eps[i])
		}
	}
	if len(out) == 0 || len(out) == len(eps) {
		return eps
	}
	return out
}

type key struct{}

// triedContext is a context that carries a Tried: one allocation for
// both, on the path of every call.
type triedContext struct {
	context.Context
	tried Tried
}

func (c *triedContext) Value(k any) any {
	if k == (key{}) {
		return &c.tried
	}
	return c.Context.Value(k)
}

// NewContext returns a context for a unary call, carrying a new Tried,
// unless ctx carries one already (the call of a hedged attempt shares its
// hedge's).
func NewContext(ctx context.Context) context.Context {
	if FromContext(ctx) != nil {
		return ctx
	}
	return &triedContext{Context: ctx}
}

// NewStreamContext returns a context for a stream, carrying a new Tried
// that says so.
func NewStreamContext(ctx context.Context) context.Context {
	return &triedContext{Context: ctx, tried: Tried{stream: true}}
}

// FromContext returns the Tried ctx carries, or nil (nil too for a nil
// ctx, which a picker may be given outside grpc-go).
func FromContext(ctx context.Context) *Tried {
	if ctx == nil {
		return nil
	}
	t, _ := ctx.Value(key{}).(*Tried)
	return t
}

var honoured sync.Map // policy name → struct{}

// Honour declares that the balancing policy name honours a Tried: the
// client adds one to each call only for such a policy. Policies call it
// from their init.
func Honour(name string) { honoured.Store(name, struct{}{}) }

// Honoured reports whether the policy name honours a Tried.
func Honoured(name string) bool {
	_, ok := honoured.Load(name)
	return ok
}
