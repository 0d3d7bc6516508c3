package leastrequest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/resolver"

	"github.com/kuberpc/kuberpc/internal/attempts"
	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
)

// namedSC identifies which endpoint a pick went to.
type namedSC struct {
	balancer.SubConn
	name string
}

type scPicker struct {
	sc   *namedSC
	err  error
	done func(balancer.DoneInfo)
}

func (p scPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	if p.err != nil {
		return balancer.PickResult{}, p.err
	}
	return balancer.PickResult{SubConn: p.sc, Done: p.done}, nil
}

// stubRand makes the draws deterministic, as grpc-go's tests stub rand
// in theirs: randIntN returns draws in turn (modulo n).
func stubRand(t *testing.T, draws ...int) {
	t.Helper()
	old := randIntN
	t.Cleanup(func() { randIntN = old })
	i := 0
	randIntN = func(n int) int {
		v := draws[i%len(draws)] % n
		i++
		return v
	}
}

func endpoints(names ...string) []endpointbalancer.Endpoint {
	var eps []endpointbalancer.Endpoint
	for _, n := range names {
		eps = append(eps, endpointbalancer.Endpoint{Key: n, Endpoint: resolver.Endpoint{Addresses: []resolver.Address{{Addr: n}}}, Picker: scPicker{sc: &namedSC{name: n}}})
	}
	return eps
}

func newBuilder(t *testing.T, js string) *pickerBuilder {
	t.Helper()
	cfg, err := parseConfig(json.RawMessage(js))
	if err != nil {
		t.Fatal(err)
	}
	return newPickerBuilder(cfg)
}

// pick picks and returns the endpoint's name and the call's Done.
func pick(t *testing.T, p balancer.Picker) (string, func(balancer.DoneInfo)) {
	t.Helper()
	res, err := p.Pick(balancer.PickInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return res.SubConn.(*namedSC).name, res.Done
}

// sequence makes n calls one at a time and returns where they went.
func sequence(t *testing.T, p balancer.Picker, n int) string {
	t.Helper()
	var got []string
	for range n {
		name, done := pick(t, p)
		done(balancer.DoneInfo{})
		got = append(got, name)
	}
	return strings.Join(got, " ")
}

// TestFewerInFlightWins: of the two endpoints drawn, the one with fewer
// calls in flight takes the call, whichever was drawn first.
func TestFewerInFlightWins(t *testing.T) {
	stubRand(t, 0, 0) // draws a, then b (the second draw skips the first)
	p := newBuilder(t, `{}`).Build(endpoints("a", "b", "c"))
	if got, _ := pick(t, p); got != "a" { // a tie, neither picked yet: the first
		t.Fatalf("first pick %s, want a", got)
	}
	for range 3 { // a has a call in flight
		if got, done := pick(t, p); got != "b" {
			t.Fatalf("pick %s, want b (a has one call in flight, b none)", got)
		} else {
			done(balancer.DoneInfo{})
		}
	}
}

// TestTiesGoToTheLeastRecentlyPicked: with the loads equal, calls rotate
// over the endpoints instead of following the draw; grpc-go's policy
// gives ties to the first drawn, here always a.
func TestTiesGoToTheLeastRecentlyPicked(t *testing.T) {
	stubRand(t, 0, 0) // draws a, then b, every time
	p := newBuilder(t, `{}`).Build(endpoints("a", "b", "c", "d"))
	if got, want := sequence(t, p, 6), "a b a b a b"; got != want {
		t.Errorf("picks %s, want %s", got, want)
	}

	// With as many choices as endpoints, every endpoint is compared: round
	// robin while the loads are equal, whatever the draws.
	p = newBuilder(t, `{"choiceCount":3}`).Build(endpoints("a", "b", "c"))
	if got, want := sequence(t, p, 6), "a b c a b c"; got != want {
		t.Errorf("choiceCount 3 of 3: picks %s, want %s", got, want)
	}
}

// TestCountsFollowDone: a pick counts a call in flight until its Done,
// which also reaches the child's Done; a child's error counts nothing.
func TestCountsFollowDone(t *testing.T) {
	childDone := 0
	eps := endpoints("a", "b")
	eps[0].Picker = scPicker{sc: &namedSC{name: "a"}, done: func(balancer.DoneInfo) { childDone++ }}
	eps[1].Picker = scPicker{err: errors.New("no connection")}
	b := newBuilder(t, `{}`)
	p := b.Build(eps)
	_, done := pick(t, p)
	if n := b.counts["a"].inFlight.Load(); n != 1 {
		t.Fatalf("in flight after a pick: %d, want 1", n)
	}
	done(balancer.DoneInfo{})
	if n := b.counts["a"].inFlight.Load(); n != 0 || childDone != 1 {
		t.Fatalf("after Done: in flight %d, child's Done called %d times; want 0 and 1", n, childDone)
	}
	// b is the better choice now (never picked) and its child fails.
	if _, err := p.Pick(balancer.PickInfo{}); err == nil {
		t.Fatal("the child's error was not returned")
	}
	if n := b.counts["b"].inFlight.Load(); n != 0 {
		t.Errorf("a failed pick left %d in flight, want 0", n)
	}
}

// TestCountsSurviveANewPicker: an endpoint set change keeps the counts of
// the endpoints that stay; a new endpoint, never picked, wins its ties.
func TestCountsSurviveANewPicker(t *testing.T) {
	stubRand(t, 0, 0) // draws a, then b
	b := newBuilder(t, `{"choiceCount":2}`)
	p := b.Build(endpoints("a", "b"))
	pick(t, p) // a: one in flight
	_, done := pick(t, p)
	done(balancer.DoneInfo{}) // b: none, picked last
	p = b.Build(endpoints("a", "b", "c"))
	if n := b.counts["a"].inFlight.Load(); n != 1 {
		t.Errorf("a's count after a new picker: %d, want 1", n)
	}
	stubRand(t, 1, 1) // draws b, then c
	if got, _ := pick(t, p); got != "c" {
		t.Errorf("pick %s, want c (as idle as b, never picked)", got)
	}
	b.Build(endpoints("c"))
	if _, ok := b.counts["a"]; ok {
		t.Error("a removed endpoint's counts are kept")
	}
}

func TestAPickAllocatesNothing(t *testing.T) {
	p := newBuilder(t, `{}`).Build(endpoints("a", "b", "c", "d", "e"))
	if n := testing.AllocsPerRun(100, func() {
		r, _ := p.Pick(balancer.PickInfo{})
		r.Done(balancer.DoneInfo{})
	}); n != 0 {
		t.Errorf("a pick allocates %v times, want 0", n)
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct{ js, err string }{
		{`{}`, ""},
		{`{"choiceCount":2}`, ""},
		{`{"choiceCount":10}`, ""},
		{`{"choiceCount":1}`, "choiceCount 1: want 2-10"},
		{`{"choiceCount":0}`, "choiceCount 0: want 2-10"},
		{`{"choiceCount":11}`, "choiceCount 11: want 2-10"},
		{`{"choiceCount":"2"}`, "cannot unmarshal"},
		{`{"ChoiceCount":3}`, `unknown field "ChoiceCount"`},
		{`{"choiceCount":2,"choiceCount":3}`, `duplicate field "choiceCount"`},
	} {
		_, err := parseConfig(json.RawMessage(tc.js))
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), Name)) {
			t.Errorf("%s: err = %v, want one naming %s and saying %q", tc.js, err, Name, tc.err)
		}
	}
}

// TestRetriesAvoidTheTried: a retry (a context whose attempts.Tried has
// a) goes to the best of the endpoints its call has not tried, though a
// has the fewest calls in flight, as a replica that fails fast has; a
// call that has tried every endpoint is picked as any other.
func TestRetriesAvoidTheTried(t *testing.T) {
	stubRand(t, 0, 0) // draws a, then b
	p := newBuilder(t, `{}`).Build(endpoints("a", "b", "c"))
	_, doneA := pick(t, p)
	if got, _ := pick(t, p); got != "b" {
		t.Fatalf("second pick %s, want b (a has a call in flight)", got)
	}
	doneA(balancer.DoneInfo{}) // in flight: a 0, b 1, c 0
	ctx := attempts.NewContext(context.Background())
	attempts.FromContext(ctx).Add("a")
	res, err := p.Pick(balancer.PickInfo{Ctx: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.SubConn.(*namedSC).name; got != "c" {
		t.Errorf("the retry of a call that tried a went to %s; want c, the better of b and c", got)
	}
	attempts.FromContext(ctx).Add("b")
	if res, err := p.Pick(balancer.PickInfo{Ctx: ctx}); err != nil || res.SubConn.(*namedSC).name != "a" {
		t.Errorf("a call that tried every endpoint: %v, %v; want a, drawn as any call", res.SubConn, err)
	}
}

// TestStreamsAreCountedApart: a stream (a context from
// attempts.NewStreamContext) open on a does not count against a's unary
// calls, which are tied with b's (a, the first drawn and least recent
// pick of the two, wins); the next stream goes to the endpoint with the
// fewest streams open, b, though a has fewer calls in flight. Before, a
// lost every comparison while its stream was open.
func TestStreamsAreCountedApart(t *testing.T) {
	stubRand(t, 0, 0) // draws a, then b
	p := newBuilder(t, `{}`).Build(endpoints("a", "b", "c"))
	streamCtx := func() context.Context { return attempts.NewStreamContext(context.Background()) }
	res, err := p.Pick(balancer.PickInfo{Ctx: streamCtx()})
	if err != nil || res.SubConn.(*namedSC).name != "a" {
		t.Fatalf("the first stream: %v, %v; want a", res.SubConn, err)
	}
	if got, want := sequence(t, p, 4), "b a b a"; got != want {
		t.Errorf("calls while a holds a stream: %s; want %s (the stream is not a call in flight)", got, want)
	}
	if got, _ := pick(t, p); got != "b" { // and keeps a call in flight
		t.Fatalf("a call went to %s; want b, the least recent", got)
	}
	res, err = p.Pick(balancer.PickInfo{Ctx: streamCtx()})
	if err != nil || res.SubConn.(*namedSC).name != "b" {
		t.Errorf("the second stream: %v, %v; want b, with no stream open (a has one)", res.SubConn, err)
	}
}
