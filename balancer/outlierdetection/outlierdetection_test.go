package outlierdetection

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	_ "google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/internal/refusal"
)

func parse(t *testing.T, js string) *Config {
	t.Helper()
	c, err := builder{}.ParseConfig(json.RawMessage(js))
	if err != nil {
		t.Fatal(err)
	}
	return c.(*Config)
}

type clock struct{ t time.Time }

func stubClock(t *testing.T) *clock {
	c := &clock{t: time.Unix(1e9, 0)}
	old := now
	now = func() time.Time { return c.t }
	t.Cleanup(func() { now = old })
	return c
}

func newTestBalancer(t *testing.T, js string, addrs ...string) *odBalancer {
	b := &odBalancer{cfg: parse(t, js), stats: map[string]*endpointStats{}}
	for _, a := range addrs {
		b.statsFor(a)
	}
	return b
}

var unavailable = status.Error(codes.Unavailable, "down")

func TestConsecutiveFailuresEjectAndEjectionEnds(t *testing.T) {
	clk := stubClock(t)
	b := newTestBalancer(t, `{"childPolicy":[{"round_robin":{}}],"consecutiveFailures":3,"baseEjectionTime":"10s"}`, "a", "b", "c")
	b.record(b.stats["a"], true)
	b.record(b.stats["a"], true)
	b.record(b.stats["a"], false) // a success resets the run
	b.record(b.stats["a"], true)
	b.record(b.stats["a"], true)
	if b.stats["a"].ejected.Load() {
		t.Fatal("ejected after 2 consecutive failures; want 3")
	}
	b.record(b.stats["a"], true)
	if !b.stats["a"].ejected.Load() {
		t.Fatal("not ejected after 3 consecutive failures")
	}
	clk.t = clk.t.Add(9 * time.Second)
	b.evaluate()
	if !b.stats["a"].ejected.Load() {
		t.Error("ejection ended before baseEjectionTime")
	}
	clk.t = clk.t.Add(time.Second)
	b.evaluate()
	if b.stats["a"].ejected.Load() {
		t.Error("still ejected after baseEjectionTime")
	}
	// A second ejection lasts twice as long.
	for range 3 {
		b.record(b.stats["a"], true)
	}
	clk.t = clk.t.Add(10 * time.Second)
	b.evaluate()
	if !b.stats["a"].ejected.Load() {
		t.Error("the second ejection ended after one baseEjectionTime; want two")
	}
}

func TestMaxEjectionPercentBounds(t *testing.T) {
	stubClock(t)
	b := newTestBalancer(t, `{"childPolicy":[{"round_robin":{}}],"consecutiveFailures":1,"maxEjectionPercent":50}`, "a", "b", "c", "d")
	for _, a := range []string{"a", "b", "c", "d"} {
		b.record(b.stats[a], true)
	}
	n := 0
	for _, s := range b.stats {
		if s.ejected.Load() {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d of 4 endpoints ejected with maxEjectionPercent 50; want 2", n)
	}
}

func TestFailurePercentage(t *testing.T) {
	stubClock(t)
	b := newTestBalancer(t, `{"childPolicy":[{"round_robin":{}}],"consecutiveFailures":0,"failurePercentage":{"threshold":50,"minimumHosts":3,"requestVolume":10}}`, "a", "b", "c")
	for i := range 10 {
		b.record(b.stats["a"], i%2 == 0) // 50% failures, never 2 in a row
		b.record(b.stats["b"], i == 0)   // 10%
		b.record(b.stats["c"], false)
	}
	b.evaluate()
	if !b.stats["a"].ejected.Load() || b.stats["b"].ejected.Load() || b.stats["c"].ejected.Load() {
		t.Errorf("ejected a=%v b=%v c=%v; want only a (50%% failures)", b.stats["a"].ejected.Load(), b.stats["b"].ejected.Load(), b.stats["c"].ejected.Load())
	}
	// Below requestVolume nothing is judged.
	b2 := newTestBalancer(t, `{"childPolicy":[{"round_robin":{}}],"consecutiveFailures":0,"failurePercentage":{"threshold":50,"minimumHosts":1,"requestVolume":10}}`, "a")
	for range 9 {
		b2.record(b2.stats["a"], true)
	}
	b2.evaluate()
	if b2.stats["a"].ejected.Load() {
		t.Error("ejected with 9 calls, under requestVolume 10")
	}
}

type seqPicker struct {
	scs []*subConn
	i   int
}

func (p *seqPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	sc := p.scs[p.i%len(p.scs)]
	p.i++
	return balancer.PickResult{SubConn: sc}, nil
}

type realSC struct {
	balancer.SubConn
	name string
}

func TestPickerSkipsEjectedAndFailsOpen(t *testing.T) {
	stubClock(t)
	b := newTestBalancer(t, `{"childPolicy":[{"round_robin":{}}],"consecutiveFailures":1,"maxEjectionPercent":100}`, "a", "b")
	a, bb := &realSC{name: "a"}, &realSC{name: "b"}
	child := &seqPicker{scs: []*subConn{newSubConn(a, b.stats["a"], b), newSubConn(bb, b.stats["b"], b)}}
	p := &picker{child: child, b: b}
	b.record(b.stats["a"], true) // a ejected
	for i := range 4 {
		res, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		if res.SubConn.(*realSC).name != "b" {
			t.Fatalf("picked %s, which is ejected", res.SubConn.(*realSC).name)
		}
		var err2 error
		if i == 3 {
			err2 = unavailable // b fails too: ejected as well
		}
		res.Done(balancer.DoneInfo{Err: err2})
	}
	// Every endpoint ejected: picks still go somewhere (fail open).
	if res, err := p.Pick(balancer.PickInfo{}); err != nil || res.SubConn == nil {
		t.Errorf("with every endpoint ejected Pick = %v, %v; want a pick anyway", res, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, js := range []string{
		`{"childPolicy":[{"no_such_policy":{}}]}`,
		`{"childPolicy":[{"round_robin":{}}],"interval":"0s"}`,
		`{"childPolicy":[{"round_robin":{}}],"maxEjectionPercent":101}`,
		`{"childPolicy":[{"round_robin":{}}],"consecutiveFailures":-1}`,
		`{"childPolicy":[{"round_robin":{}}],"unknown":1}`,
		`{"childPolicy":[{"round_robin":{}}],"ConsecutiveFailures":1}`,
		`{"childPolicy":[{"round_robin":{}}],"consecutiveFailures":1,"consecutiveFailures":0}`,
	} {
		if _, err := (builder{}).ParseConfig(json.RawMessage(js)); err == nil {
			t.Errorf("ParseConfig(%s) succeeded", js)
		}
	}
}

// TestRefusalsDoNotEject: a replica shedding load refuses calls with
// UNAVAILABLE marked as not processed; those are not failures here, or
// every replica of an overloaded service would be ejected in turn.
func TestRefusalsDoNotEject(t *testing.T) {
	stubClock(t)
	b := newTestBalancer(t, `{"childPolicy":[{"round_robin":{}}],"consecutiveFailures":2,"maxEjectionPercent":100}`, "a", "b")
	child := &seqPicker{scs: []*subConn{newSubConn(&realSC{name: "a"}, b.stats["a"], b)}}
	p := &picker{child: child, b: b}
	for range 5 {
		res, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		res.Done(balancer.DoneInfo{Err: refusal.New(codes.Unavailable, "shedding")})
	}
	if b.stats["a"].ejected.Load() {
		t.Error("ejected after 5 refusals; refusals are not failures")
	}
	for range 2 {
		res, _ := p.Pick(balancer.PickInfo{})
		res.Done(balancer.DoneInfo{Err: unavailable})
	}
	if !b.stats["a"].ejected.Load() {
		t.Error("not ejected after 2 real failures")
	}
}

type stateCC struct {
	balancer.ClientConn
	states []balancer.State
}

func (c *stateCC) UpdateState(s balancer.State) { c.states = append(c.states, s) }

// TestResolverErrorBeforeAnyConfiguration: a resolver error before the
// first configuration fails calls with it; there is no child to tell.
func TestResolverErrorBeforeAnyConfiguration(t *testing.T) {
	cc := &stateCC{}
	b := builder{}.Build(cc, balancer.BuildOptions{})
	b.ResolverError(errors.New("endpointslices is forbidden"))
	b.UpdateSubConnState(nil, balancer.SubConnState{})
	b.Close()
	if len(cc.states) != 1 || cc.states[0].ConnectivityState != connectivity.TransientFailure {
		t.Fatalf("states %v, want one TRANSIENT_FAILURE", cc.states)
	}
	if _, err := cc.states[0].Picker.Pick(balancer.PickInfo{}); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("pick error %v, want the resolver's", err)
	}
}
