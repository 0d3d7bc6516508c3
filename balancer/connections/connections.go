// Package connections is a load-balancing policy that wraps any other
// (round_robin, p2c_ewma, least_request, ...) and gives every endpoint
// the child uses more than one connection. The child balances over
// endpoints as it always does, seeing one SubConn per endpoint; this
// policy then chooses the connection: the first while it has fewer than
// spillAt calls in flight (default 16), and beyond that the ready
// connection with the fewest, the first on ties.
//
// It is for a client that keeps many calls in flight on each of few
// replicas: one HTTP/2 connection is read by one goroutine and written
// by one on each side, and with tens of calls in flight on one
// connection those two goroutines set the pace when the replica has
// cores to spare. grpc.io's performance guide gives the same advice for
// other languages (a pool of channels). Splitting fewer calls costs
// instead: each connection batches fewer frames per write. Measured
// before spillAt existed (calls spread from the first on): on the local
// cluster, 32 callers over 3 pods of 500m CPU (about 11 calls per pod)
// made 9 % fewer calls a second with two connections per pod than with
// one, every round; two connections used in turn at one call at a time,
// 14-18 % fewer (bench probe). With spillAt 16 the cluster's two clients
// are level (e2e/results/cluster_throughput.md), and one call at a time
// never leaves the first connection; with 64 calls in flight to one
// replica on two cores (bench/results.md, the fast path) the second
// connection takes half of them.
//
// Each extra connection is a connection the replica holds: N per
// endpoint multiplies what each replica's MAX_CONNECTIONS must allow.
// The extra connections follow the first: they are made when the child
// connects it, made again when they drop, and shut down with it. A
// change of perEndpoint applies to the endpoints the child connects from
// then on.
//
// Importing the package registers "kuberpc_connections". Its
// configuration is
//
//	{"perEndpoint": 2, "spillAt": 16, "childPolicy": [{"round_robin": {}}]}
//
// client.WithConnectionsPerEndpoint sets it, inside outlier detection,
// which so ejects an endpoint with all its connections.
package connections

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/kuberpc/kuberpc/internal/childpolicy"
	"github.com/kuberpc/kuberpc/internal/strictdecode"
)

// Name is the policy's name in service configs.
const Name = "kuberpc_connections"

// MaxPerEndpoint is the most connections per endpoint the policy makes.
const MaxPerEndpoint = 16

func init() { balancer.Register(builder{}) }

// Config is the policy's configuration; see the package documentation.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	PerEndpoint int                          `json:"perEndpoint"`
	SpillAt     *int                         `json:"spillAt,omitempty"`
	ChildPolicy []map[string]json.RawMessage `json:"childPolicy"`

	child       string
	childConfig serviceconfig.LoadBalancingConfig
	spillAt     int64
}

// DefaultSpillAt is how many calls the first connection of an endpoint
// carries before others take some: a call goes on the first connection
// while it has fewer than this many in flight.
const DefaultSpillAt = 16

type builder struct{}

func (builder) Name() string { return Name }

// ParseConfig parses and checks the configuration: perEndpoint from 1 to
// MaxPerEndpoint, spillAt not negative (DefaultSpillAt if left out; 0
// spreads calls from the first on), and a registered child policy other
// than kuberpc_connections itself. Field names are case-sensitive; an
// unknown or repeated field is an error.
func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	c := &Config{}
	if err := strictdecode.JSON(js, c); err != nil {
		return nil, fmt.Errorf("%s: config: %w", Name, err)
	}
	if c.PerEndpoint < 1 || c.PerEndpoint > MaxPerEndpoint {
		return nil, fmt.Errorf("%s: perEndpoint %d: want 1-%d", Name, c.PerEndpoint, MaxPerEndpoint)
	}
	c.spillAt = DefaultSpillAt
	if c.SpillAt != nil {
		if *c.SpillAt < 0 {
			return nil, fmt.Errorf("%s: spillAt %d: must not be negative", Name, *c.SpillAt)
		}
		c.spillAt = int64(*c.SpillAt)
	}
	var err error
	if c.child, c.childConfig, err = childpolicy.Parse(c.ChildPolicy); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if c.child == Name {
		return nil, fmt.Errorf("%s: childPolicy: %s inside itself would open perEndpoint × perEndpoint connections to each endpoint; give perEndpoint once", Name, Name)
	}
	return c, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return &connsBalancer{Child: childpolicy.Child{CC: cc, Opts: opts}}
}

// connsBalancer sits between the channel and the child policy: it makes
// the extra SubConns beside each one the child makes, and wraps the
// child's pickers to choose among them.
type connsBalancer struct {
	childpolicy.Child

	mu   sync.Mutex
	last *balancer.State // the child's last, which a change of an extra connection publishes again

	perEndpoint atomic.Int32
	spillAt     atomic.Int64
}

func (b *connsBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, ok := s.BalancerConfig.(*Config)
	if !ok {
		return fmt.Errorf("%s: no configuration", Name)
	}
	b.perEndpoint.Store(int32(cfg.PerEndpoint))
	b.spillAt.Store(cfg.spillAt)
	return b.Update(cfg.child, &wrappedCC{ClientConn: b.CC, b: b}, s.ResolverState, cfg.childConfig)
}

// wrappedCC is the child's ClientConn.
type wrappedCC struct {
	balancer.ClientConn
	b *connsBalancer
}

// NewSubConn makes the SubConn the child asked for and its extras, and
// returns the first, wrapped: the child sees its state and nothing of
// the others.
func (w *wrappedCC) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	g := &group{members: make([]*member, w.b.perEndpoint.Load()), spillAt: w.b.spillAt.Load(), b: w.b}
	childListener := opts.StateListener
	for i := range g.members {
		m := &member{g: g}
		o := opts
		if i == 0 {
			o.StateListener = func(s balancer.SubConnState) {
				m.setState(s.ConnectivityState)
				if childListener != nil {
					childListener(s)
				}
			}
		} else {
			o.StateListener = func(s balancer.SubConnState) {
				m.setState(s.ConnectivityState)
				if s.ConnectivityState == connectivity.Idle {
					g.reconnect(m)
				}
				// A call that picked the connection as it left READY
				// waits for a new picker; the child sends none, as it
				// sees nothing of this connection.
				g.b.republish()
			}
		}
		sc, err := w.ClientConn.NewSubConn(addrs, o)
		if err != nil {
			for _, made := range g.members[:i] {
				made.sc.Shutdown()
			}
			return nil, err
		}
		m.sc = sc
		m.done = m.doneFunc
		g.members[i] = m
	}
	return &subConn{SubConn: g.members[0].sc, g: g}, nil
}

// UpdateAddresses gives every connection of the group the new addresses.
func (w *wrappedCC) UpdateAddresses(sc balancer.SubConn, addrs []resolver.Address) {
	s, ok := sc.(*subConn)
	if !ok {
		w.ClientConn.UpdateAddresses(sc, addrs)
		return
	}
	for _, m := range s.g.members {
		w.ClientConn.UpdateAddresses(m.sc, addrs)
	}
}

// RemoveSubConn shuts the group down.
func (w *wrappedCC) RemoveSubConn(sc balancer.SubConn) { sc.Shutdown() }

func (w *wrappedCC) UpdateState(s balancer.State) {
	w.b.mu.Lock()
	w.b.last = &s
	w.b.mu.Unlock()
	w.ClientConn.UpdateState(balancer.State{ConnectivityState: s.ConnectivityState, Picker: &picker{child: s.Picker}})
}

// republish gives the channel the child's last state again with a new
// picker (the same choices), so that calls waiting for one pick again.
func (b *connsBalancer) republish() {
	b.mu.Lock()
	last := b.last
	b.mu.Unlock()
	if last != nil {
		b.CC.UpdateState(balancer.State{ConnectivityState: last.ConnectivityState, Picker: &picker{child: last.Picker}})
	}
}

// group is the connections of one SubConn the child made.
type group struct {
	members []*member // the child's first
	spillAt int64
	b       *connsBalancer

	mu       sync.Mutex
	connect  bool // the child has connected the first: the extras follow it
	shutdown bool
}

// member is one connection of a group.
type member struct {
	g        *group
	sc       balancer.SubConn
	ready    atomic.Bool
	inFlight atomic.Int64
	done     func(balancer.DoneInfo) // doneFunc, bound once: a pick allocates nothing
}

func (m *member) setState(s connectivity.State) { m.ready.Store(s == connectivity.Ready) }

func (m *member) doneFunc(balancer.DoneInfo) { m.inFlight.Add(-1) }

// reconnect connects an extra connection that went idle again, while the
// child keeps the group connected.
func (g *group) reconnect(m *member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.connect && !g.shutdown {
		m.sc.Connect()
	}
}

// pick returns the first connection while it has fewer than spillAt
// calls in flight, and then the ready connection with the fewest, the
// first on ties (and when none of the others is ready).
func (g *group) pick() *member {
	best := g.members[0]
	n := best.inFlight.Load()
	if n < g.spillAt {
		return best
	}
	for _, m := range g.members[1:] {
		if m.ready.Load() {
			if k := m.inFlight.Load(); k < n {
				best, n = m, k
			}
		}
	}
	return best
}

// subConn is the group as the child sees it: the first connection, whose
// Connect and Shutdown carry the others along.
type subConn struct {
	balancer.SubConn
	g *group
}

func (s *subConn) Connect() {
	if s.g.mark(&s.g.connect) {
		for _, m := range s.g.members {
			m.sc.Connect()
		}
	}
}

func (s *subConn) Shutdown() {
	if s.g.mark(&s.g.shutdown) {
		for _, m := range s.g.members {
			m.sc.Shutdown()
		}
	}
}

// mark sets *flag (connect or shutdown) under the group's lock and
// reports whether the group was still up; nothing happens to a group
// after its shutdown.
func (g *group) mark(flag *bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shutdown {
		return false
	}
	*flag = true
	return true
}

// picker sends the child's pick on its endpoint's least busy connection.
type picker struct {
	child balancer.Picker
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	r, err := p.child.Pick(info)
	if err != nil {
		return r, err
	}
	s, ok := r.SubConn.(*subConn)
	if !ok {
		return r, nil // not one of ours (a child that wraps SubConns itself)
	}
	m := s.g.pick()
	m.inFlight.Add(1)
	r.SubConn = m.sc
	if done := r.Done; done != nil {
		r.Done = func(di balancer.DoneInfo) {
			m.inFlight.Add(-1)
			done(di)
		}
	} else {
		r.Done = m.done
	}
	return r, nil
}
