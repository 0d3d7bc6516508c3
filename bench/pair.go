package bench

import (
	"runtime"
	"sort"
	"sync"
	"time"
)

// Side is one arm of an A/B pair: run executes n operations with the given
// concurrency.
type Side func(n, concurrency int)

// Result is what one side measured over all rounds.
type Result struct {
	Ops      int
	Elapsed  time.Duration
	Mallocs  uint64
	perRound []float64 // ops/s of each round
}

// QPS is operations per second over all rounds.
func (r Result) QPS() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// AllocsPerOp is heap allocations per operation, both ends of the RPC.
func (r Result) AllocsPerOp() float64 { return float64(r.Mallocs) / float64(r.Ops) }

// Interleave runs the sides in turn (A/B/C, A/B/C, ...), rounds times
// each, n operations per round, so that machine noise hits all alike. It
// returns each side's totals, in order.
func Interleave(rounds, n, concurrency int, sides ...Side) []Result {
	rs := make([]Result, len(sides))
	for range rounds {
		for i, s := range sides {
			measure(&rs[i], n, concurrency, s)
		}
	}
	return rs
}

func measure(r *Result, n, concurrency int, s Side) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	s(n, concurrency)
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	r.Ops += n
	r.Elapsed += el
	r.Mallocs += after.Mallocs - before.Mallocs
	r.perRound = append(r.perRound, float64(n)/el.Seconds())
}

// MedianRoundRatio is the median over rounds of a's per-round QPS divided
// by b's, a steadier estimate than the ratio of totals when rounds differ.
func MedianRoundRatio(a, b Result) float64 {
	var rs []float64
	for i := range min(len(a.perRound), len(b.perRound)) {
		rs = append(rs, a.perRound[i]/b.perRound[i])
	}
	if len(rs) == 0 {
		return 0
	}
	sort.Float64s(rs)
	return rs[len(rs)/2]
}

// Parallel calls op n times from concurrency goroutines.
func Parallel(n, concurrency int, op func()) {
	if concurrency <= 1 {
		for range n {
			op()
		}
		return
	}
	var wg sync.WaitGroup
	per := n / concurrency
	extra := n % concurrency
	for g := range concurrency {
		k := per
		if g < extra {
			k++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range k {
				op()
			}
		}()
	}
	wg.Wait()
}
