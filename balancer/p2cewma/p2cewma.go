// Package p2cewma is a latency-aware load-balancing policy: for each RPC it
// picks two READY endpoints at random and sends the RPC to the one with
// the lower cost, where cost is a peak-EWMA of its response time times
// its outstanding RPCs plus one (the policy of Finagle and Linkerd).
//
// The peak EWMA jumps to a slower sample at once and decays toward faster
// ones with time constant decay, so a replica that slows down loses
// traffic within a few RPCs, and one that recovers wins it back. The
// estimate also decays while an endpoint is not picked, so an avoided
// endpoint is retried. New endpoints start at the mean of the others'
// estimates, so a scale-up is neither stampeded nor starved.
//
// The price of reacting at once is that one slow call (a GC pause, a
// cold cache) sends its replica almost nothing until its estimate has
// decayed to the others': about decay × ln(slow ÷ usual round trip),
// less while the others have calls in flight. With the default 10 s,
// one 100 ms call among 0.3 ms ones kept its replica out for about a
// minute (ln 333 ≈ 5.8 decays). A shorter decay brings such a replica
// back sooner, and forgets a replica that is really slow sooner too.
//
// A call that fails in a way that says the replica is in trouble
// (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, DATA_LOSS) counts as
// a sample of at least FailurePenalty, so a replica that fails fast is
// avoided rather than rewarded for its short round trips; the penalty
// decays like any other sample, so the replica is tried again. A call a
// kuberpc server refused while shedding load doubles the replica's
// estimate instead: its short round trip would draw traffic to the
// overloaded replica (whose in-flight count stays low because it
// refuses), and the failure penalty would push all of it onto the others
// at once, even onto a replica ten times slower.
//
// Streams are balanced by the costs unary calls have taught, and teach
// nothing: their length is not a round trip, nor is a stream waiting for
// messages a call in the replica's queue. (kuberpc's client tells the
// policy which calls are streams; without it, as through a plain
// grpc.ClientConn, every call counts.)
//
// Importing the package registers "p2c_ewma". Configuration:
// {"decay": "10s", "failurePenalty": "1s"}; a config update keeps the
// endpoints' statistics.
package p2cewma

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"

	"github.com/kuberpc/kuberpc/internal/attempts"
	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
	"github.com/kuberpc/kuberpc/internal/refusal"
	"github.com/kuberpc/kuberpc/internal/strictdecode"
)

// Name is the policy's name in service configs.
const Name = "p2c_ewma"

// DefaultDecay is the EWMA time constant.
const DefaultDecay = 10 * time.Second

// DefaultFailurePenalty is the smallest sample a failed call counts as.
const DefaultFailurePenalty = time.Second

// randIntN and now are package variables so that tests can stub them, as
// grpc-go's policies do.
var (
	randIntN = rand.IntN
	now      = func() int64 { return int64(time.Since(epoch)) }
)

func init() {
	attempts.Honour(Name)
	balancer.Register(endpointbalancer.NewBuilder(endpointbalancer.Policy{
		Name:        Name,
		ParseConfig: parseConfig,
		NewPickerBuilder: func(cfg serviceconfig.LoadBalancingConfig) endpointbalancer.PickerBuilder {
			b := &pickerBuilder{stats: map[string]*stats{}}
			b.UpdateConfig(cfg)
			return b
		},
	}))
}

// Config is p2c_ewma's configuration. Field names are case-sensitive;
// an unknown or repeated field is an error.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
	// Decay is the EWMA time constant, as a Go duration string.
	Decay string `json:"decay,omitempty"`
	// FailurePenalty is the smallest sample a failed call counts as, as a
	// Go duration string; "0s" turns the penalty off.
	FailurePenalty *string `json:"failurePenalty,omitempty"`

	decay, penalty time.Duration
}

func parseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	c := &Config{decay: DefaultDecay, penalty: DefaultFailurePenalty}
	if err := strictdecode.JSON(js, c); err != nil {
		return nil, fmt.Errorf("p2c_ewma: config: %w", err)
	}
	if c.Decay != "" {
		d, err := time.ParseDuration(c.Decay)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("p2c_ewma: decay %q: want a positive duration such as 10s", c.Decay)
		}
		c.decay = d
	}
	if c.FailurePenalty != nil {
		d, err := time.ParseDuration(*c.FailurePenalty)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("p2c_ewma: failurePenalty %q: want a duration such as 1s, or 0s for none", *c.FailurePenalty)
		}
		c.penalty = d
	}
	return c, nil
}

// stats is one endpoint's load estimate.
type stats struct {
	inFlight atomic.Int64

	mu   sync.Mutex
	ewma float64 // nanoseconds
	last int64   // unix nanos of the last update
}

var epoch = time.Now()

// cost is the decayed peak EWMA times (in-flight + 1).
func (s *stats) cost(t int64, decay float64) float64 {
	s.mu.Lock()
	e := s.ewma
	if dt := t - s.last; dt > 0 {
		e *= math.Exp(-float64(dt) / decay)
	}
	s.mu.Unlock()
	return e * float64(s.inFlight.Load()+1)
}

// backOff doubles the decayed estimate: the replica refused a call while
// shedding load.
func (s *stats) backOff(t int64, decay float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.ewma
	if dt := t - s.last; dt > 0 {
		e *= math.Exp(-float64(dt) / decay)
	}
	s.ewma, s.last = 2*e, t
}

func (s *stats) observe(rtt, t int64, decay float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := float64(rtt)
	if r > s.ewma {
		s.ewma = r // peak: take a slower sample at once
	} else {
		w := math.Exp(-float64(t-s.last) / decay)
		s.ewma = s.ewma*w + r*(1-w)
	}
	s.last = t
}

type pickerBuilder struct {
	decay, penalty time.Duration
	stats          map[string]*stats
}

// UpdateConfig applies a new configuration (nil: the defaults) to the
// pickers built from now on; the endpoints' statistics are kept.
func (b *pickerBuilder) UpdateConfig(cfg serviceconfig.LoadBalancingConfig) {
	c, _ := cfg.(*Config)
	if c == nil {
		c = &Config{decay: DefaultDecay, penalty: DefaultFailurePenalty}
	}
	b.decay, b.penalty = c.decay, c.penalty
}

func (b *pickerBuilder) Build(ready []endpointbalancer.Endpoint) balancer.Picker {
	live := make(map[string]*stats, len(ready))
	var sum float64
	var n int
	for _, e := range ready {
		if s, ok := b.stats[e.Key]; ok {
			live[e.Key] = s
			s.mu.Lock()
			sum += s.ewma
			s.mu.Unlock()
			n++
		}
	}
	mean := 0.0
	if n > 0 {
		mean = sum / float64(n)
	}
	p := &picker{decay: float64(b.decay), penalty: int64(b.penalty), eps: make([]endpoint, len(ready))}
	for i, e := range ready {
		s, ok := live[e.Key]
		if !ok {
			s = &stats{ewma: mean, last: now()}
			live[e.Key] = s
		}
		p.eps[i] = endpoint{key: e.Key, picker: e.Picker, stats: s}
	}
	b.stats = live
	return p
}

type endpoint struct {
	key    string
	picker balancer.Picker
	stats  *stats
}

func endpointKey(e *endpoint) string { return e.key }

type picker struct {
	decay   float64
	penalty int64 // nanoseconds
	eps     []endpoint
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	// A retry or a hedge is drawn from the endpoints its call has not
	// tried (see package attempts).
	tried := attempts.FromContext(info.Ctx)
	eps := attempts.Untried(tried, p.eps, endpointKey)
	e := &eps[0]
	if n := len(eps); n > 1 {
		i := randIntN(n)
		j := randIntN(n - 1)
		if j >= i {
			j++
		}
		t := now()
		if a, b := &eps[i], &eps[j]; a.stats.cost(t, p.decay) <= b.stats.cost(t, p.decay) {
			e = a
		} else {
			e = b
		}
	}
	res, err := e.picker.Pick(info)
	if err == nil && tried != nil {
		tried.Add(e.key)
	}
	if err != nil || tried != nil && tried.Stream() {
		// A stream is balanced by the costs unary calls have taught,
		// and teaches nothing: its length is not a round trip (a watch
		// held for an hour would keep its replica from every pick for
		// minutes after it ended), nor is a stream waiting for messages
		// a call in the replica's queue.
		return res, err
	}
	s := e.stats
	start := now()
	s.inFlight.Add(1)
	done := res.Done
	res.Done = func(di balancer.DoneInfo) {
		t := now()
		s.inFlight.Add(-1)
		if _, refused := refusal.Is(di.Err); refused {
			s.backOff(t, p.decay)
		} else {
			rtt := t - start
			if endpointbalancer.ReplicaFailed(di.Err) && rtt < p.penalty {
				rtt = p.penalty
			}
			s.observe(rtt, t, p.decay)
		}
		if done != nil {
			done(di)
		}
	}
	return res, nil
}
