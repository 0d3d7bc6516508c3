package bench

import (
	"fmt"
	"io"

	discoveryv1 "k8s.io/api/discovery/v1"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"

	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// pathCC is the balancer.ClientConn of a measured path: it makes fake
// SubConns that connect at once, so that the path's cost is the
// resolver's and grpc-go's balancers' (endpointsharding, pick_first,
// round_robin's picker), not the network's.
type pathCC struct {
	balancer.ClientConn // the methods the balancers do not call
	pending             []*pathSubConn
	live                int // SubConns created and not shut down
	pickers             int
}

type pathSubConn struct {
	balancer.SubConn
	cc        *pathCC
	state     func(balancer.SubConnState)
	health    func(balancer.SubConnState)
	connected bool
}

func (c *pathCC) NewSubConn(_ []resolver.Address, o balancer.NewSubConnOptions) (balancer.SubConn, error) {
	c.live++
	return &pathSubConn{cc: c, state: o.StateListener}, nil
}

func (c *pathCC) UpdateState(balancer.State)                           { c.pickers++ }
func (c *pathCC) ResolveNow(resolver.ResolveNowOptions)                {}
func (c *pathCC) Target() string                                       { return "kubernetes:///example.default:grpc" }
func (c *pathCC) RemoveSubConn(balancer.SubConn)                       {}
func (c *pathCC) UpdateAddresses(balancer.SubConn, []resolver.Address) {}

func (s *pathSubConn) Connect() {
	if !s.connected {
		s.connected = true
		s.cc.pending = append(s.cc.pending, s)
	}
}
func (s *pathSubConn) UpdateAddresses([]resolver.Address) {}
func (s *pathSubConn) Shutdown()                          { s.cc.live-- }
func (s *pathSubConn) RegisterHealthListener(f func(balancer.SubConnState)) {
	s.health = f
}
func (s *pathSubConn) GetOrBuildProducer(balancer.ProducerBuilder) (balancer.Producer, func()) {
	return nil, func() {}
}

// settle connects every SubConn the balancers asked to connect, until
// none is left: after it the picker balances over every endpoint given.
func (c *pathCC) settle() {
	for len(c.pending) > 0 {
		s := c.pending[0]
		c.pending = c.pending[1:]
		s.state(balancer.SubConnState{ConnectivityState: connectivity.Connecting})
		s.state(balancer.SubConnState{ConnectivityState: connectivity.Ready})
		if s.health != nil {
			s.health(balancer.SubConnState{ConnectivityState: connectivity.Ready})
		}
	}
}

// path is the whole client side of an EndpointSlice event: the resolver's
// merge, then round_robin (endpointsharding over pick_first) and its
// picker.
type path struct {
	m   *kuberesolver.Merger
	cc  *pathCC
	bal balancer.Balancer
}

func newPath(subset int) *path {
	t := kuberesolver.Target{Service: "example", Namespace: "default", PortName: "grpc"}
	p := &path{m: kuberesolver.NewMerger(t, ""), cc: &pathCC{}}
	if subset > 0 {
		p.m.SetSubset(subset)
	}
	p.bal = balancer.Get("round_robin").Build(p.cc, balancer.BuildOptions{})
	return p
}

// update takes the Service's slices through the path.
func (p *path) update(ss []*discoveryv1.EndpointSlice) error {
	eps, _ := p.m.Update(ss)
	if err := p.bal.UpdateClientConnState(balancer.ClientConnState{ResolverState: resolver.State{Endpoints: eps}}); err != nil {
		return err
	}
	p.cc.settle()
	return nil
}

func (p *path) close() { p.bal.Close() }

// BalancerPath measures the whole client path per EndpointSlice event at
// s.Endpoints endpoints (5,000 at the full scale), with and without subsetting: the time and allocations
// of a one-endpoint change against a full rebuild (a new client), the
// connections a client holds, and, with subsetting, how evenly 1,000
// clients' subsets cover the endpoints.
func BalancerPath(s Scale, progress io.Writer) ([]Row, error) {
	const subset = 20
	n := s.Endpoints
	full := makeSlices(n)
	iters := max(s.Calls/200, 2)
	var rows []Row
	for _, size := range []int{0, subset} {
		var tFull, tOne, aFull, aOne []float64
		p := newPath(size)
		if err := p.update(full); err != nil {
			return nil, err
		}
		var err error
		// A new client over thousands of endpoints takes seconds (a
		// SubConn each): three rounds of one build each say enough.
		rounds, buildIters := s.Rounds, iters
		if size == 0 {
			rounds, buildIters = min(s.Rounds, 3), 1
		}
		for r := range rounds {
			d, a := measureOp(buildIters, func() {
				q := newPath(size)
				if e := q.update(full); e != nil {
					err = e
				}
				q.close()
			})
			tFull, aFull = append(tFull, d), append(aFull, a)
			variants := oneEndpointChanges(full, r*iters, iters, false)
			i := 0
			d, a = measureOp(iters, func() {
				if e := p.update(variants[i]); e != nil {
					err = e
				}
				i++
			})
			tOne, aOne = append(tOne, d), append(aOne, a)
		}
		if err != nil {
			return nil, err
		}
		cas := fmt.Sprintf("%d endpoints, every one balanced over", n)
		goal := ""
		if size > 0 {
			cas, goal = fmt.Sprintf("%d endpoints, subsets of %d", n, size), "≤ 0.1"
		}
		p.update(full)
		conns := float64(p.cc.live)
		p.close()
		rows = append(rows,
			ratioRow("resolver scale", cas+", whole path: one-endpoint change ÷ full rebuild", "time", goal, tOne, tFull),
			ratioRow("resolver scale", cas+", whole path: one-endpoint change ÷ full rebuild", "allocs", goal, aOne, aFull))
		if size > 0 {
			rows = append(rows, Row{Pair: "resolver scale", Case: cas, Metric: "connections per client ÷ subset size",
				Subject: conns, Baseline: float64(size), Ratio: conns / float64(size), Min: conns / float64(size), Max: conns / float64(size), Goal: "≤ 1"})
		} else {
			rows = append(rows, Row{Pair: "resolver scale", Case: cas, Metric: "connections per client",
				Subject: conns, Baseline: float64(n), Ratio: conns / float64(n), Min: conns / float64(n), Max: conns / float64(n)})
		}
		fmt.Fprintf(progress, "resolver scale: %s done\n", cas)
	}
	// Balance: how many of 1,000 clients chose each endpoint, busiest ÷
	// mean (at the full scale 1,000 × 20 ÷ 5,000 = 4).
	clients := max(s.Calls/2, 50)
	chosen := map[string]int{}
	t := kuberesolver.Target{Service: "example", Namespace: "default", PortName: "grpc"}
	for range clients {
		m := kuberesolver.NewMerger(t, "")
		m.SetSubset(subset)
		eps, _ := m.Update(full)
		for _, e := range eps {
			chosen[e.Addresses[0].Addr]++
		}
	}
	mean := float64(clients*subset) / float64(n)
	hi := 0
	for _, c := range chosen {
		hi = max(hi, c)
	}
	rows = append(rows, Row{Pair: "resolver scale", Case: fmt.Sprintf("%d endpoints, subsets of %d, %d clients", n, subset, clients),
		Metric: "busiest endpoint's clients ÷ mean", Subject: float64(hi), Baseline: mean, Ratio: float64(hi) / mean, Min: float64(hi) / mean, Max: float64(hi) / mean})
	fmt.Fprintln(progress, "resolver scale: balance done")
	return rows, nil
}
