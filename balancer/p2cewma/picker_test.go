package p2cewma

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/internal/attempts"
	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
	"github.com/kuberpc/kuberpc/internal/refusal"
)

// namedSC identifies which endpoint a pick went to.
type namedSC struct {
	balancer.SubConn
	name string
}

type scPicker struct{ sc *namedSC }

func (p scPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{SubConn: p.sc}, nil
}

// fakeClock and fixed picks make the policy deterministic, as grpc-go's
// tests stub rand in theirs.
type fakeClock struct{ t int64 }

func (c *fakeClock) now() int64 { return c.t }

func (c *fakeClock) advance(d time.Duration) { c.t += int64(d) }

func stub(t *testing.T, pairs ...int) *fakeClock {
	t.Helper()
	clock := &fakeClock{t: int64(time.Hour)}
	oldNow, oldRand := now, randIntN
	t.Cleanup(func() { now, randIntN = oldNow, oldRand })
	now = clock.now
	i := 0
	randIntN = func(n int) int {
		v := pairs[i%len(pairs)] % n
		i++
		return v
	}
	return clock
}

func endpoints(names ...string) []endpointbalancer.Endpoint {
	var eps []endpointbalancer.Endpoint
	for _, n := range names {
		eps = append(eps, endpointbalancer.Endpoint{Key: n, Endpoint: resolver.Endpoint{Addresses: []resolver.Address{{Addr: n}}}, Picker: scPicker{&namedSC{name: n}}})
	}
	return eps
}

// call picks, lets rtt pass, and finishes the call with err.
func call(t *testing.T, p balancer.Picker, clock *fakeClock, rtt time.Duration, err error) string {
	t.Helper()
	res, perr := p.Pick(balancer.PickInfo{})
	if perr != nil {
		t.Fatal(perr)
	}
	clock.advance(rtt)
	res.Done(balancer.DoneInfo{Err: err})
	return res.SubConn.(*namedSC).name
}

func newBuilder(t *testing.T, cfgJSON string) *pickerBuilder {
	t.Helper()
	cfg, err := parseConfig(json.RawMessage(cfgJSON))
	if err != nil {
		t.Fatal(err)
	}
	b := &pickerBuilder{stats: map[string]*stats{}}
	b.UpdateConfig(cfg)
	return b
}

// TestFailingFastIsPenalised: a replica that answers UNAVAILABLE in 100µs
// loses to a healthy one that takes 5ms, where without the penalty its
// short round trips would win it every pick.
func TestFailingFastIsPenalised(t *testing.T) {
	clock := stub(t, 0, 0) // always compare endpoint 0 ("bad") with 1 ("good")
	b := newBuilder(t, `{}`)
	p := b.Build(endpoints("bad", "good"))
	// Warm both up: each answers in 5ms (picks alternate by cost ties).
	b.stats["bad"].observe(int64(5*time.Millisecond), clock.t, float64(DefaultDecay))
	b.stats["good"].observe(int64(5*time.Millisecond), clock.t, float64(DefaultDecay))

	if got := call(t, p, clock, 100*time.Microsecond, status.Error(codes.Unavailable, "down")); got != "bad" {
		t.Fatalf("first pick went to %s; with equal costs the first of the pair wins", got)
	}
	bad, good := b.stats["bad"].cost(clock.t, float64(DefaultDecay)), b.stats["good"].cost(clock.t, float64(DefaultDecay))
	if bad <= good {
		t.Errorf("after a fast UNAVAILABLE the failing replica costs %v ≤ the healthy one's %v", time.Duration(bad), time.Duration(good))
	}
	for range 10 {
		if got := call(t, p, clock, 5*time.Millisecond, nil); got != "good" {
			t.Fatalf("a pick went to %s after it failed; want the healthy replica", got)
		}
	}
	// A client error (the caller's fault) is not the replica's: no penalty.
	b2 := newBuilder(t, `{}`)
	p2 := b2.Build(endpoints("a", "b"))
	b2.stats["a"].observe(int64(5*time.Millisecond), clock.t, float64(DefaultDecay))
	b2.stats["b"].observe(int64(5*time.Millisecond), clock.t, float64(DefaultDecay))
	call(t, p2, clock, 100*time.Microsecond, status.Error(codes.InvalidArgument, "bad request"))
	if a := b2.stats["a"].cost(clock.t, float64(DefaultDecay)); a >= float64(5*time.Millisecond) {
		t.Errorf("INVALID_ARGUMENT penalised the replica: cost %v", time.Duration(a))
	}
}

// TestRefusalsBackOffGently: a replica that refuses calls while shedding
// load (UNAVAILABLE marked as not processed) neither gets the failure
// penalty, which would push all its traffic onto a replica 10× slower,
// nor a fast sample, which would draw traffic to it: each refusal doubles
// its estimate, so traffic moves away as refusals continue.
func TestRefusalsBackOffGently(t *testing.T) {
	clock := stub(t, 0, 0)
	b := newBuilder(t, `{}`)
	p := b.Build(endpoints("busy", "slow"))
	b.stats["busy"].observe(int64(5*time.Millisecond), clock.t, float64(DefaultDecay))
	b.stats["slow"].observe(int64(50*time.Millisecond), clock.t, float64(DefaultDecay))
	before := b.stats["busy"].cost(clock.t, float64(DefaultDecay))
	if got := call(t, p, clock, 100*time.Microsecond, refusal.New(codes.Unavailable, "shedding")); got != "busy" {
		t.Fatalf("first pick went to %s; want the cheaper busy replica", got)
	}
	after := b.stats["busy"].cost(clock.t, float64(DefaultDecay))
	if after < 1.9*before || after > 2.1*before {
		t.Errorf("a refusal moved the busy replica's cost %v → %v; want it doubled", time.Duration(before), time.Duration(after))
	}
	// Three more refusals: 5ms × 16 = 80ms, now dearer than the slow one.
	for range 3 {
		call(t, p, clock, 100*time.Microsecond, refusal.New(codes.Unavailable, "shedding"))
	}
	if got := call(t, p, clock, 50*time.Millisecond, nil); got != "slow" {
		t.Errorf("after four refusals a pick went to %s; want the slow replica", got)
	}
}

// TestPenaltyDecaysAndConfigUpdates: the penalty decays with the
// configured time constant, and a config update (shorter decay, no
// penalty) takes effect while the statistics are kept.
func TestPenaltyDecaysAndConfigUpdates(t *testing.T) {
	clock := stub(t, 0, 0)
	b := newBuilder(t, `{"decay":"1s","failurePenalty":"2s"}`)
	p := b.Build(endpoints("a", "b"))
	call(t, p, clock, time.Millisecond, status.Error(codes.ResourceExhausted, "shed"))
	if got := time.Duration(b.stats["a"].ewma); got != 2*time.Second {
		t.Fatalf("penalised sample = %v; want the configured 2s", got)
	}
	clock.advance(5 * time.Second) // five time constants
	if c := time.Duration(b.stats["a"].cost(clock.t, float64(time.Second))); c > 20*time.Millisecond {
		t.Errorf("penalty after 5 decay constants = %v; want it mostly gone (≈13ms)", c)
	}

	cfg, err := parseConfig(json.RawMessage(`{"decay":"10s","failurePenalty":"0s"}`))
	if err != nil {
		t.Fatal(err)
	}
	before := b.stats["a"]
	b.UpdateConfig(cfg)
	p = b.Build(endpoints("a", "b"))
	if b.stats["a"] != before {
		t.Error("a config update dropped the endpoints' statistics")
	}
	b.stats["a"].ewma, b.stats["a"].last = 0, clock.t
	call(t, p, clock, time.Millisecond, status.Error(codes.Unavailable, "down"))
	if got := time.Duration(b.stats["a"].ewma); got != time.Millisecond {
		t.Errorf("with failurePenalty 0s a failed 1ms call counts as %v; want 1ms", got)
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr bool
	}{
		{`{}`, false}, {`{"decay":"5s"}`, false}, {`{"failurePenalty":"0s"}`, false},
		{`{"decay":"0s"}`, true}, {`{"decay":"x"}`, true}, {`{"failurePenalty":"-1s"}`, true}, {`{"decy":"1s"}`, true}, {`[`, true},
		{`{"Decay":"5s"}`, true}, {`{"decay":"5s","decay":"6s"}`, true},
	} {
		_, err := parseConfig(json.RawMessage(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("parseConfig(%s) = %v; want error %v", tc.in, err, tc.wantErr)
		}
	}
}

// TestRetriesAvoidTheTried: the two endpoints a retry compares are drawn
// from those its call has not tried (a context whose attempts.Tried has
// a), though a is the cheapest; the pick is recorded.
func TestRetriesAvoidTheTried(t *testing.T) {
	stub(t, 0, 0) // draws the first two
	p := newBuilder(t, `{}`).Build(endpoints("a", "b", "c"))
	ctx := attempts.NewContext(context.Background())
	tried := attempts.FromContext(ctx)
	tried.Add("a")
	res, err := p.Pick(balancer.PickInfo{Ctx: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.SubConn.(*namedSC).name; got != "b" || !tried.Has("b") {
		t.Errorf("the retry of a call that tried a went to %s (recorded: %v); want b, of b and c, recorded", got, tried.Has("b"))
	}
	if res, err := p.Pick(balancer.PickInfo{}); err != nil || res.SubConn.(*namedSC).name != "a" {
		t.Errorf("a call with no attempts: %v, %v; want a, of a and b", res.SubConn, err)
	}
}

// TestStreamsTeachNothing: a stream (a context from
// attempts.NewStreamContext) is picked by cost like any call, but
// neither counts in flight while it is open nor teaches its length as a
// round trip when it ends: a and b, alike, stay tied (a, the first drawn,
// wins) while a holds a stream and after it ended 10 minutes later.
// Before, b won both: a's cost was doubled while the stream was open,
// then its estimate was 10 minutes.
func TestStreamsTeachNothing(t *testing.T) {
	clock := stub(t, 0, 0) // draws a, then b
	p := newBuilder(t, `{}`).Build(endpoints("a", "b"))
	// Teach both 1 ms: a (a tie at 0), then b (the call has tried a).
	resA, _ := p.Pick(balancer.PickInfo{})
	notA := attempts.NewContext(context.Background())
	attempts.FromContext(notA).Add("a")
	resB, _ := p.Pick(balancer.PickInfo{Ctx: notA})
	clock.advance(time.Millisecond)
	resA.Done(balancer.DoneInfo{})
	resB.Done(balancer.DoneInfo{})
	if a, b := resA.SubConn.(*namedSC).name, resB.SubConn.(*namedSC).name; a != "a" || b != "b" {
		t.Fatalf("first picks %s, %s; want a, b", a, b)
	}
	stream, err := p.Pick(balancer.PickInfo{Ctx: attempts.NewStreamContext(context.Background())})
	if err != nil || stream.SubConn.(*namedSC).name != "a" {
		t.Fatalf("the stream's pick: %v, %v; want a", stream.SubConn, err)
	}
	if got := call(t, p, clock, 0, nil); got != "a" {
		t.Errorf("a call while a holds a stream went to %s; want a (a tie: the stream is not a call in flight)", got)
	}
	clock.advance(10 * time.Minute)
	if stream.Done != nil {
		stream.Done(balancer.DoneInfo{})
	}
	if got := call(t, p, clock, time.Millisecond, nil); got != "a" {
		t.Errorf("a call after a's 10-minute stream went to %s; want a (the stream's length is not a round trip)", got)
	}
}

// TestOneSlowCallKeepsItsReplicaOut measures what the package doc says
// one slow call costs: among replicas answering in 0.3 ms, one 100 ms
// call keeps its replica from every pick for decay × ln(100/0.3) ≈ 58 s
// with the default decay, and it is picked again once that has passed.
func TestOneSlowCallKeepsItsReplicaOut(t *testing.T) {
	clock := stub(t, 0, 0, 1, 1, 0, 1) // the pairs (a, b), (b, c), (a, c) in turn
	b := newBuilder(t, `{}`)
	p := b.Build(endpoints("a", "b", "c"))
	usual := 300 * time.Microsecond
	for _, n := range []string{"a", "b", "c"} {
		b.stats[n].observe(int64(usual), clock.t, float64(DefaultDecay))
	}
	b.stats["a"].observe(int64(100*time.Millisecond), clock.t, float64(DefaultDecay))
	begin := clock.t
	for clock.t-begin < int64(2*time.Minute) {
		if call(t, p, clock, usual, nil) == "a" {
			break
		}
		clock.advance(10 * time.Millisecond)
	}
	out := time.Duration(clock.t - begin)
	want := time.Duration(float64(DefaultDecay) * math.Log(float64(100*time.Millisecond)/float64(usual)))
	if out < want-2*time.Second || out > want+2*time.Second {
		t.Errorf("one 100 ms call kept its replica out for %v; the package doc says about %v", out.Round(time.Second), want.Round(time.Second))
	}
	t.Logf("one 100 ms call among 0.3 ms ones kept its replica out for %v", out.Round(10*time.Millisecond))
}
