package limiter

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestAcquireRespectsTheLimit(t *testing.T) {
	l := New(Options{Initial: 3, Min: 1})
	var releases []func(time.Duration, bool)
	for range 3 {
		r := l.Acquire()
		if r == nil {
			t.Fatal("shed below the limit")
		}
		releases = append(releases, r)
	}
	if l.Acquire() != nil || !l.Full() {
		t.Fatal("admitted a fourth request with limit 3")
	}
	releases[0](time.Millisecond, true)
	if l.Acquire() == nil {
		t.Fatal("shed after a release")
	}
}

// sim drives a limiter with a simulated server: each interval, offered
// requests arrive at once; with n admitted each takes service ×
// max(1, n/cores) when CPU-bound (and the CPU reads n/cores), or service
// when I/O-bound (CPU low).
type sim struct {
	l        *Limiter
	clk      *clock
	cpu      float64
	cores    int
	service  time.Duration
	cpuBound bool
}

func newSim(cores int, service time.Duration, cpuBound bool, o Options) *sim {
	s := &sim{clk: &clock{t: time.Unix(1e9, 0)}, cores: cores, service: service, cpuBound: cpuBound}
	o.Now = s.clk.now
	if o.CPU == nil {
		o.CPU = func() float64 { return s.cpu }
	}
	s.l = New(o)
	return s
}

func (s *sim) run(offered, intervals int) {
	for range intervals {
		var admitted []func(time.Duration, bool)
		for range offered {
			if r := s.l.Acquire(); r != nil {
				admitted = append(admitted, r)
			}
		}
		n := len(admitted)
		rtt := s.service
		s.cpu = 0.1
		if s.cpuBound {
			rtt = s.service * time.Duration(max(1, (n+s.cores-1)/s.cores))
			s.cpu = min(1, float64(n)/float64(s.cores))
		}
		s.clk.t = s.clk.t.Add(100 * time.Millisecond)
		for _, r := range admitted {
			r(rtt, true)
		}
	}
}

// TestCPUBoundOverloadShrinksTheLimit: 200 concurrent CPU-bound requests
// on 2 cores: the CPU signal brings the limit down to the minimum, where
// the cores are still busy, instead of letting 200 queue.
func TestCPUBoundOverloadShrinksTheLimit(t *testing.T) {
	s := newSim(2, time.Millisecond, true, Options{Initial: 100, Min: 4})
	s.run(200, 100)
	if got := s.l.Limit(); got > 8 {
		t.Errorf("limit after CPU-bound overload on 2 cores = %d; want it at the minimum 4-8", got)
	}
}

// TestIOBoundLoadGrowsTheLimit: when latency holds and the CPU is idle,
// the limit grows to the load.
func TestIOBoundLoadGrowsTheLimit(t *testing.T) {
	s := newSim(2, 20*time.Millisecond, false, Options{Initial: 10, Min: 4})
	s.run(300, 100)
	if got := s.l.Limit(); got < 300 {
		t.Errorf("limit under I/O-bound load of 300 = %d; want ≥ 300", got)
	}
}

// TestQueueingShrinksTheLimit: when latency rises past twice its
// baseline (a dependency slows down, requests queue), the limit shrinks
// even with the CPU idle.
func TestQueueingShrinksTheLimit(t *testing.T) {
	s := newSim(2, 10*time.Millisecond, false, Options{Initial: 100, Min: 4})
	s.run(100, 20)
	before := s.l.Limit()
	s.service = 50 * time.Millisecond
	s.run(100, 20)
	if after := s.l.Limit(); after >= before/2 {
		t.Errorf("limit %d → %d after latency rose 5×; want it at least halved", before, after)
	}
}

// TestIdleTrafficDoesNotInflateTheLimit: a window that used under half the
// limit says nothing about capacity.
func TestIdleTrafficDoesNotInflateTheLimit(t *testing.T) {
	s := newSim(2, time.Millisecond, false, Options{Initial: 20, Min: 4})
	s.run(2, 100)
	if got := s.l.Limit(); got != 20 {
		t.Errorf("limit after idle traffic = %d; want 20 unchanged", got)
	}
}

func TestFailuresAreNotLearned(t *testing.T) {
	s := newSim(2, time.Millisecond, false, Options{Initial: 8, Min: 4})
	for range 50 {
		r := s.l.Acquire()
		s.clk.t = s.clk.t.Add(100 * time.Millisecond)
		r(time.Hour, false)
	}
	if s.l.Limit() != 8 || s.l.InFlight() != 0 {
		t.Errorf("limit %d, in flight %d after failures; want 8 and 0", s.l.Limit(), s.l.InFlight())
	}
}

// noCPU is a CPU signal that never fires: latency alone decides, as in
// the server.
func noCPU() float64 { return 0 }

// TestCPUQueueingShrinksTheLimitFast: on one core, latency measured from
// admission sees the queue for the CPU; a limit that starts wide open
// (2000) comes down to a handful within a second and a half of a spike
// of 300 (the cut is proportional: it halves per interval while latency
// is far over), without any CPU signal.
func TestCPUQueueingShrinksTheLimitFast(t *testing.T) {
	s := newSim(1, time.Millisecond, true, Options{Initial: 2000, Min: 2, CPU: noCPU})
	s.run(1, 20) // light traffic: the baseline
	s.run(300, 15)
	if got := s.l.Limit(); got > 8 {
		t.Errorf("limit 1.5s into a spike of 300 on one core = %d; want ≤ 8", got)
	}
}

// TestBusyFastServerKeepsItsLimit: 40 callers of a 100µs handler on 2
// cores queue each other to 2ms, 20× the unloaded latency but only 1.9ms
// more: that is a busy server, not an overloaded one, and it must not
// shed (MinQueueDelay).
func TestBusyFastServerKeepsItsLimit(t *testing.T) {
	s := newSim(2, 100*time.Microsecond, true, Options{Initial: 2000, Min: 2, CPU: noCPU, MinQueueDelay: 2 * time.Millisecond})
	s.run(1, 20)
	s.run(40, 50)
	if got := s.l.Limit(); got < 40 {
		t.Errorf("limit of a busy fast server = %d; want ≥ 40 (no shedding)", got)
	}
}

// TestLimitSettles: under steady overload the limit settles instead of
// swinging between growth and cuts: over the last 30 intervals it stays
// within a factor of 1.5.
func TestLimitSettles(t *testing.T) {
	s := newSim(1, time.Millisecond, true, Options{Initial: 2000, Min: 2, CPU: noCPU, MinQueueDelay: 5 * time.Millisecond})
	s.run(1, 20)
	s.run(300, 30)
	lo, hi := s.l.Limit(), s.l.Limit()
	for range 30 {
		s.run(300, 1)
		lo, hi = min(lo, s.l.Limit()), max(hi, s.l.Limit())
	}
	if float64(hi) > 1.5*float64(lo) {
		t.Errorf("limit swung between %d and %d under steady overload", lo, hi)
	}
}
