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
// Importing the package registers "p2c_ewma". Configuration:
// {"decay": "10s"}.
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

	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
)

// Name is the policy's name in service configs.
const Name = "p2c_ewma"

// DefaultDecay is the EWMA time constant.
const DefaultDecay = 10 * time.Second

func init() {
	balancer.Register(endpointbalancer.NewBuilder(endpointbalancer.Policy{
		Name:        Name,
		ParseConfig: parseConfig,
		NewPickerBuilder: func(cfg serviceconfig.LoadBalancingConfig) endpointbalancer.PickerBuilder {
			c, _ := cfg.(*Config)
			if c == nil {
				c = &Config{decay: DefaultDecay}
			}
			return &pickerBuilder{decay: c.decay, stats: map[string]*stats{}}
		},
	}))
}

// Config is p2c_ewma's configuration.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
	// Decay is the EWMA time constant, as a Go duration string.
	Decay string `json:"decay,omitempty"`
	decay time.Duration
}

func parseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	c := &Config{decay: DefaultDecay}
	if err := json.Unmarshal(js, c); err != nil {
		return nil, fmt.Errorf("p2c_ewma: config: %w", err)
	}
	if c.Decay != "" {
		d, err := time.ParseDuration(c.Decay)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("p2c_ewma: decay %q: want a positive duration such as 10s", c.Decay)
		}
		c.decay = d
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

func now() int64 { return int64(time.Since(epoch)) }

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
	decay time.Duration
	stats map[string]*stats
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
	p := &picker{decay: float64(b.decay), eps: make([]endpoint, len(ready))}
	for i, e := range ready {
		s, ok := live[e.Key]
		if !ok {
			s = &stats{ewma: mean, last: now()}
			live[e.Key] = s
		}
		p.eps[i] = endpoint{picker: e.Picker, stats: s}
	}
	b.stats = live
	return p
}

type endpoint struct {
	picker balancer.Picker
	stats  *stats
}

type picker struct {
	decay float64
	eps   []endpoint
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	e := &p.eps[0]
	if n := len(p.eps); n > 1 {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		t := now()
		if a, b := &p.eps[i], &p.eps[j]; a.stats.cost(t, p.decay) <= b.stats.cost(t, p.decay) {
			e = a
		} else {
			e = b
		}
	}
	res, err := e.picker.Pick(info)
	if err != nil {
		return res, err
	}
	s := e.stats
	start := now()
	s.inFlight.Add(1)
	done := res.Done
	res.Done = func(di balancer.DoneInfo) {
		t := now()
		s.inFlight.Add(-1)
		s.observe(t-start, t, p.decay)
		if done != nil {
			done(di)
		}
	}
	return res, nil
}
