package connections

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/balancer"
	_ "google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"

	"github.com/kuberpc/kuberpc/internal/childpolicy"
)

// stubCC is the channel: it makes stubSubConns and records them.
type stubCC struct {
	balancer.ClientConn
	made   []*stubSubConn
	states []balancer.State
}

func (c *stubCC) UpdateState(s balancer.State) { c.states = append(c.states, s) }

func (c *stubCC) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	sc := &stubSubConn{addr: addrs[0].Addr, listener: opts.StateListener}
	c.made = append(c.made, sc)
	return sc, nil
}

type stubSubConn struct {
	balancer.SubConn
	addr               string
	listener           func(balancer.SubConnState)
	connects, shutdown int
}

func (s *stubSubConn) Connect()  { s.connects++ }
func (s *stubSubConn) Shutdown() { s.shutdown++ }

func (s *stubSubConn) set(st connectivity.State) {
	s.listener(balancer.SubConnState{ConnectivityState: st})
}

// newGroup makes the SubConns of one endpoint as a child would, with n
// per endpoint, and returns what the child sees, the channel's SubConns
// and the states the child was told of.
func newGroup(t *testing.T, n int) (*subConn, []*stubSubConn, *[]connectivity.State) {
	return newSpillingGroup(t, n, 0)
}

// newSpillingGroup is newGroup with the first connection taking spillAt
// calls before the others take any.
func newSpillingGroup(t *testing.T, n int, spillAt int64) (*subConn, []*stubSubConn, *[]connectivity.State) {
	t.Helper()
	cc := &stubCC{}
	b := &connsBalancer{Child: childpolicy.Child{CC: cc}}
	b.perEndpoint.Store(int32(n))
	b.spillAt.Store(spillAt)
	var told []connectivity.State
	sc, err := (&wrappedCC{ClientConn: cc, b: b}).NewSubConn([]resolver.Address{{Addr: "a:1"}}, balancer.NewSubConnOptions{
		StateListener: func(s balancer.SubConnState) { told = append(told, s.ConnectivityState) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.made) != n {
		t.Fatalf("%d SubConns made for one endpoint, want %d", len(cc.made), n)
	}
	for _, m := range cc.made {
		if m.addr != "a:1" {
			t.Fatalf("a SubConn for %q, want the endpoint's address a:1", m.addr)
		}
	}
	return sc.(*subConn), cc.made, &told
}

// stubPicker picks one SubConn, with the Done it is given.
type stubPicker struct {
	sc   balancer.SubConn
	done func(balancer.DoneInfo)
}

func (p stubPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{SubConn: p.sc, Done: p.done}, nil
}

// TestChildSeesOnlyTheFirstConnection: the child is told the first
// connection's states and no other's; connecting and shutting down what
// it sees carries every connection along.
func TestChildSeesOnlyTheFirstConnection(t *testing.T) {
	sc, made, told := newGroup(t, 3)
	made[1].set(connectivity.Ready)
	made[0].set(connectivity.Connecting)
	made[2].set(connectivity.TransientFailure)
	if got := *told; len(got) != 1 || got[0] != connectivity.Connecting {
		t.Errorf("the child was told %v, want only the first connection's [CONNECTING]", got)
	}
	sc.Connect()
	sc.Shutdown()
	sc.Shutdown()
	for i, m := range made {
		if m.connects != 1 || m.shutdown != 1 {
			t.Errorf("connection %d: %d connects, %d shutdowns; want 1 and 1", i, m.connects, m.shutdown)
		}
	}
}

// TestExtraConnectionsReconnectWhileTheGroupIsConnected: an extra
// connection that goes idle is connected again once the child has
// connected the group, and not before it or after its shutdown.
func TestExtraConnectionsReconnectWhileTheGroupIsConnected(t *testing.T) {
	sc, made, _ := newGroup(t, 2)
	made[1].set(connectivity.Idle)
	if made[1].connects != 0 {
		t.Fatalf("an extra connection was connected before the child connected the group")
	}
	sc.Connect()
	made[1].set(connectivity.Ready)
	made[1].set(connectivity.Idle)
	if made[1].connects != 2 {
		t.Fatalf("extra connection: %d connects after it went idle, want 2 (the group's, then its own)", made[1].connects)
	}
	made[0].set(connectivity.Idle)
	if made[0].connects != 1 {
		t.Errorf("the first connection was reconnected by the policy: that is the child's to decide")
	}
	sc.Shutdown()
	made[1].set(connectivity.Idle)
	if made[1].connects != 2 {
		t.Errorf("an extra connection was connected after the group was shut down")
	}
}

// TestPickTakesTheLeastBusyReadyConnection: the first connection while
// the others are no less busy (so one call at a time keeps to it), then
// the one with the fewest calls in flight among the ready ones; each
// call's Done frees its connection, and the child's Done still runs.
func TestPickTakesTheLeastBusyReadyConnection(t *testing.T) {
	sc, made, _ := newGroup(t, 3)
	for _, m := range made {
		m.set(connectivity.Ready)
	}
	made[2].set(connectivity.TransientFailure)
	childDone := 0
	p := &picker{child: stubPicker{sc: sc}}
	pick := func() (*stubSubConn, func(balancer.DoneInfo)) {
		t.Helper()
		r, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return r.SubConn.(*stubSubConn), r.Done
	}
	for range 5 { // one call at a time
		got, done := pick()
		if got != made[0] {
			t.Fatalf("one call at a time went to connection %s, want the first", got.addr)
		}
		done(balancer.DoneInfo{})
	}
	var got []*stubSubConn
	var dones []func(balancer.DoneInfo)
	for range 4 {
		sc, done := pick()
		got, dones = append(got, sc), append(dones, done)
	}
	if got[0] != made[0] || got[1] != made[1] || got[2] != made[0] || got[3] != made[1] {
		t.Fatalf("four calls at once went to %v, want the first, the second, the first, the second (the third is not ready)", indices(made, got))
	}
	dones[0](balancer.DoneInfo{}) // the first connection now has one call, the second two
	dones[2](balancer.DoneInfo{})
	dones[1](balancer.DoneInfo{})
	if sc, _ := pick(); sc != made[0] {
		t.Errorf("with 0 calls on the first connection and 1 on the second, a call went to %v", indices(made, []*stubSubConn{sc}))
	}

	p = &picker{child: stubPicker{sc: sc, done: func(balancer.DoneInfo) { childDone++ }}}
	_, done := pick()
	done(balancer.DoneInfo{})
	if childDone != 1 {
		t.Errorf("the child's Done ran %d times, want 1", childDone)
	}
}

// TestFirstConnectionTakesSpillAtCallsFirst: the first connection takes
// calls until it has spillAt in flight; then the least busy one does,
// the first on ties.
func TestFirstConnectionTakesSpillAtCallsFirst(t *testing.T) {
	sc, made, _ := newSpillingGroup(t, 2, 3)
	for _, m := range made {
		m.set(connectivity.Ready)
	}
	p := &picker{child: stubPicker{sc: sc}}
	var got []*stubSubConn
	for range 7 {
		r, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.SubConn.(*stubSubConn))
	}
	if want := []int{0, 0, 0, 1, 1, 1, 0}; fmt.Sprint(indices(made, got)) != fmt.Sprint(want) {
		t.Errorf("seven calls at once went to connections %v, want %v", indices(made, got), want)
	}
}

func indices(made, got []*stubSubConn) []int {
	var out []int
	for _, g := range got {
		for i, m := range made {
			if g == m {
				out = append(out, i)
			}
		}
	}
	return out
}

// TestOneCallAtATimeAllocatesNothing: a pick binds no closure when the
// child's picker has no Done of its own (round_robin's).
func TestOneCallAtATimeAllocatesNothing(t *testing.T) {
	sc, made, _ := newGroup(t, 2)
	for _, m := range made {
		m.set(connectivity.Ready)
	}
	p := &picker{child: stubPicker{sc: sc}}
	if n := testing.AllocsPerRun(100, func() {
		r, _ := p.Pick(balancer.PickInfo{})
		r.Done(balancer.DoneInfo{})
	}); n != 0 {
		t.Errorf("a pick allocates %v times, want 0", n)
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		js, err string
	}{
		{`{"perEndpoint":2,"childPolicy":[{"round_robin":{}}]}`, ""},
		{`{"perEndpoint":16,"childPolicy":[{"nope":{}},{"round_robin":{}}]}`, ""},
		{`{"childPolicy":[{"round_robin":{}}]}`, "perEndpoint 0: want 1-16"},
		{`{"perEndpoint":17,"childPolicy":[{"round_robin":{}}]}`, "perEndpoint 17: want 1-16"},
		{`{"perEndpoint":-1,"childPolicy":[{"round_robin":{}}]}`, "perEndpoint -1"},
		{`{"perEndpoint":2,"spillAt":0,"childPolicy":[{"round_robin":{}}]}`, ""},
		{`{"perEndpoint":2,"spillAt":-1,"childPolicy":[{"round_robin":{}}]}`, "spillAt -1: must not be negative"},
		{`{"perEndpoint":2}`, "childPolicy: missing"},
		{`{"perEndpoint":2,"childPolicy":[{"nope":{}}]}`, `["nope"]`},
		{`{"perEndpoint":2,"childPolicy":[{"round_robin":{}}],"connections":3}`, "unknown field"},
		{`{"perEndpoint":"2"}`, "cannot unmarshal"},
		{`{"perEndpoint":2,"perendpoint":3,"childPolicy":[{"round_robin":{}}]}`, `unknown field "perendpoint"`},
		{`{"perEndpoint":2,"perEndpoint":3,"childPolicy":[{"round_robin":{}}]}`, `duplicate field "perEndpoint"`},
		{`{"perEndpoint":2,"childPolicy":[{"kuberpc_connections":{"perEndpoint":16,"childPolicy":[{"round_robin":{}}]}}]}`, "inside itself"},
	} {
		_, err := builder{}.ParseConfig(json.RawMessage(tc.js))
		if tc.err == "" && err != nil {
			t.Errorf("%s: %v", tc.js, err)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), Name)) {
			t.Errorf("%s: err = %v, want one naming %s and saying %q", tc.js, err, Name, tc.err)
		}
	}
}

// TestResolverErrorBeforeAnyConfiguration: a resolver that fails before
// its first update (a Service the client may not read) leaves the channel
// failing calls with its error; there is no child to tell yet.
func TestResolverErrorBeforeAnyConfiguration(t *testing.T) {
	cc := &stubCC{}
	b := builder{}.Build(cc, balancer.BuildOptions{})
	b.ResolverError(errors.New("endpointslices is forbidden"))
	b.UpdateSubConnState(nil, balancer.SubConnState{})
	b.(balancer.ExitIdler).ExitIdle()
	b.Close()
	if len(cc.states) != 1 || cc.states[0].ConnectivityState != connectivity.TransientFailure {
		t.Fatalf("states %v, want one TRANSIENT_FAILURE", cc.states)
	}
	if _, err := cc.states[0].Picker.Pick(balancer.PickInfo{}); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("pick error %v, want the resolver's", err)
	}
}

// TestAChangeOfAnExtraConnectionPublishesAPickerAgain: the child sees
// nothing of the extra connections, so the policy itself gives the
// channel a new picker when one changes state (calls that picked it as
// it closed wait for one), and none before the child has published.
func TestAChangeOfAnExtraConnectionPublishesAPickerAgain(t *testing.T) {
	cc := &stubCC{}
	b := &connsBalancer{Child: childpolicy.Child{CC: cc}}
	b.perEndpoint.Store(2)
	w := &wrappedCC{ClientConn: cc, b: b}
	sc, err := w.NewSubConn([]resolver.Address{{Addr: "a:1"}}, balancer.NewSubConnOptions{StateListener: func(balancer.SubConnState) {}})
	if err != nil {
		t.Fatal(err)
	}
	cc.made[1].set(connectivity.Ready)
	if len(cc.states) != 0 {
		t.Fatalf("%d states published before the child published one", len(cc.states))
	}
	w.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: stubPicker{sc: sc}})
	cc.made[1].set(connectivity.Idle)
	if len(cc.states) != 2 || cc.states[1].ConnectivityState != connectivity.Ready || cc.states[1].Picker == cc.states[0].Picker {
		t.Fatalf("states %+v, want the child's READY, then READY again with a new picker", cc.states)
	}
	if r, _ := cc.states[1].Picker.Pick(balancer.PickInfo{}); r.SubConn != cc.made[0] {
		t.Errorf("the new picker picked %v, want the first connection (the second is idle)", r.SubConn)
	}
}
