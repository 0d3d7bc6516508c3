// Package leastrequest is a load-balancing policy that sends each RPC to
// the endpoint with the fewest RPCs in flight among choiceCount READY
// endpoints drawn at random (power of two choices by default), as
// grpc-go's least_request_experimental and Envoy's LEAST_REQUEST do.
//
// Unlike theirs, a tie goes to the candidate picked least recently, not
// to the first drawn. With replicas alike, most picks are ties (each
// replica has as many calls in flight as the others), and a tie settled
// by the draw sends calls at random: one replica gets two in a row while
// another gets none, and their queues show in the tail. bench/results.md
// ("slow replica", all healthy) measured grpc-go's policy at 1.11-1.19×
// round robin's p99; settled by recency the ties rotate, and the policy
// is round robin while loads are equal and least-request once they
// differ. A new endpoint has never been picked and wins its ties.
//
// Streams are counted apart, when kuberpc's client marks them (through a
// plain grpc.ClientConn every call counts as a call in flight): a unary
// call goes to the fewest unary calls in flight, a stream to the fewest
// streams open. Counted together, one watch held open by a client that
// makes one call at a time kept its replica from every call (it lost
// every comparison, its count never below 1), and a replica serving the
// streams of many clients would be starved of their calls.
//
// Importing the package registers "least_request". Configuration:
// {"choiceCount": 2}, from 2 to 10 (the endpoints drawn per RPC: the first
// two distinct, the others drawn with replacement; with as many as there
// are endpoints, all of them are compared). A config update keeps the
// endpoints' counts.
package leastrequest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"

	"github.com/kuberpc/kuberpc/internal/attempts"
	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
	"github.com/kuberpc/kuberpc/internal/strictdecode"
)

// Name is the policy's name in service configs.
const Name = "least_request"

// MaxChoiceCount is the most endpoints compared per RPC.
const MaxChoiceCount = 10

// randIntN is a package variable so that tests can stub it, as grpc-go's
// policies do.
var randIntN = rand.IntN

func init() {
	attempts.Honour(Name)
	balancer.Register(endpointbalancer.NewBuilder(endpointbalancer.Policy{
		Name:        Name,
		ParseConfig: parseConfig,
		NewPickerBuilder: func(cfg serviceconfig.LoadBalancingConfig) endpointbalancer.PickerBuilder {
			return newPickerBuilder(cfg)
		},
	}))
}

// Config is least_request's configuration. Field names are
// case-sensitive; an unknown or repeated field is an error.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
	// ChoiceCount is how many endpoints are compared per RPC, 2 to
	// MaxChoiceCount; default 2.
	ChoiceCount *int `json:"choiceCount,omitempty"`
}

func parseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	c := &Config{}
	if err := strictdecode.JSON(js, c); err != nil {
		return nil, fmt.Errorf("%s: config: %w", Name, err)
	}
	if c.ChoiceCount != nil && (*c.ChoiceCount < 2 || *c.ChoiceCount > MaxChoiceCount) {
		return nil, fmt.Errorf("%s: choiceCount %d: want 2-%d", Name, *c.ChoiceCount, MaxChoiceCount)
	}
	return c, nil
}

// counts is one endpoint's state, kept across pickers.
type counts struct {
	inFlight   atomic.Int64  // unary calls, and streams the client did not tell apart
	streams    atomic.Int64  // streams kuberpc's client marked as such
	lastPick   atomic.Uint64 // the balancer's pick sequence number at its last pick; 0: never
	done       func(balancer.DoneInfo)
	doneStream func(balancer.DoneInfo)
}

func newCounts() *counts {
	c := &counts{}
	c.done = func(balancer.DoneInfo) { c.inFlight.Add(-1) }
	c.doneStream = func(balancer.DoneInfo) { c.streams.Add(-1) }
	return c
}

// before reports whether c is the better choice than d: fewer calls in
// flight, or as many and picked less recently.
func (c *counts) before(d *counts) bool {
	if a, b := c.inFlight.Load(), d.inFlight.Load(); a != b {
		return a < b
	}
	return c.lastPick.Load() < d.lastPick.Load()
}

// beforeForStream is before for a stream: fewer streams open, or as many
// and picked less recently.
func (c *counts) beforeForStream(d *counts) bool {
	if a, b := c.streams.Load(), d.streams.Load(); a != b {
		return a < b
	}
	return c.lastPick.Load() < d.lastPick.Load()
}

type pickerBuilder struct {
	choices int
	counts  map[string]*counts
	seq     atomic.Uint64 // shared by the pickers of one balancer
}

// newPickerBuilder returns the picker builder of one balancer, with cfg
// (nil: the defaults).
func newPickerBuilder(cfg serviceconfig.LoadBalancingConfig) *pickerBuilder {
	b := &pickerBuilder{counts: map[string]*counts{}}
	b.UpdateConfig(cfg)
	return b
}

// UpdateConfig applies a new configuration (nil: the defaults) to the
// pickers built from now on; the endpoints' counts are kept.
func (b *pickerBuilder) UpdateConfig(cfg serviceconfig.LoadBalancingConfig) {
	b.choices = 2
	if c, _ := cfg.(*Config); c != nil && c.ChoiceCount != nil {
		b.choices = *c.ChoiceCount
	}
}

func (b *pickerBuilder) Build(ready []endpointbalancer.Endpoint) balancer.Picker {
	live := make(map[string]*counts, len(ready))
	p := &picker{choices: b.choices, seq: &b.seq, eps: make([]endpoint, len(ready))}
	for i, e := range ready {
		c := b.counts[e.Key]
		if c == nil {
			c = newCounts()
		}
		live[e.Key] = c
		p.eps[i] = endpoint{key: e.Key, picker: e.Picker, counts: c}
	}
	b.counts = live
	return p
}

type endpoint struct {
	key    string
	picker balancer.Picker
	counts *counts
}

func endpointKey(e *endpoint) string { return e.key }

type picker struct {
	choices int
	seq     *atomic.Uint64
	eps     []endpoint
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	// A retry or a hedge is drawn from the endpoints its call has not
	// tried (see package attempts).
	tried := attempts.FromContext(info.Ctx)
	stream := tried != nil && tried.Stream()
	before := (*counts).before
	if stream {
		before = (*counts).beforeForStream
	}
	e := p.choose(attempts.Untried(tried, p.eps, endpointKey), before)
	res, err := e.picker.Pick(info)
	if err != nil {
		return res, err
	}
	if tried != nil {
		tried.Add(e.key)
	}
	c := e.counts
	c.lastPick.Store(p.seq.Add(1))
	cdone := c.done
	if stream {
		c.streams.Add(1)
		cdone = c.doneStream
	} else {
		c.inFlight.Add(1)
	}
	if done := res.Done; done != nil {
		res.Done = func(di balancer.DoneInfo) { cdone(di); done(di) }
	} else {
		res.Done = cdone
	}
	return res, nil
}

// choose returns the best, by before, of choices endpoints of eps drawn
// at random (the first two distinct), or of all of them when there are no
// more.
func (p *picker) choose(eps []endpoint, before func(c, d *counts) bool) *endpoint {
	n := len(eps)
	if n <= p.choices {
		best := &eps[0]
		for i := 1; i < n; i++ {
			if before(eps[i].counts, best.counts) {
				best = &eps[i]
			}
		}
		return best
	}
	i := randIntN(n)
	j := randIntN(n - 1)
	if j >= i {
		j++
	}
	best := &eps[i]
	if e := &eps[j]; before(e.counts, best.counts) {
		best = e
	}
	for range p.choices - 2 {
		if e := &eps[randIntN(n)]; before(e.counts, best.counts) {
			best = e
		}
	}
	return best
}
