// Package limiter is the server runtime's adaptive concurrency limit:
// additive increase while the server has room, multiplicative decrease when
// it shows overload, judged every Interval on two signals:
//
//   - CPU (optional): when the process uses more than CPUThreshold of its
//     cores, the limit shrinks by Decrease (if the queue grows, as below). The server does not use it: a
//     process that shares its cores (several servers in one test binary,
//     a client in the same process) would shed for load that is not its
//     own, and latency measured from admission already sees the CPU queue.
//   - latency: when the window's mean latency exceeds Tolerance times the
//     smallest recent window mean (the no-load baseline, kept over
//     BaselineWindows windows), and exceeds it by MinQueueDelay, the limit
//     shrinks, the more the further latency is over. Latency is measured
//     from admission, before the handler runs, so it sees queueing for
//     the CPU as well as for what I/O-bound handlers wait on.
//
// Latency alone cannot tell an overloaded server from a busy one: 64
// callers in a closed loop (each waiting for its answer before the next
// call) queue behind each other as much as a spike of open-loop traffic
// does, but their queue is as long as it will ever be, and refusing them
// only turns calls into errors (they come straight back). Overload is a
// queue that grows. So a latency cut needs one of three more signs: the
// most calls in flight in the window (those still in flight when it ends
// count) passed the most of the previous second by an eighth (at least
// 8), in it or in the window before (calls show their latency when they
// end, a window after they made the queue grow); or the limit already
// refused calls in it (arrivals beyond what the server completes); or
// callers gave up on calls that had waited past the threshold (see
// below: whatever the shape of the load, it is more than the server
// serves in the time its callers wait; and a server too starved to read
// its connections sees neither of the other signs, its queue grows in
// its sockets). The previous second is by the clock: after a quiet
// spell, a busy spell's peaks no longer raise the bar a spike must clear.
//
// Cuts are undone when what they were for is over: fully after a quiet
// second (no call ended in it, places were free, none was turned away),
// and by doubling back toward where the limit was after a calm window
// (none of those signs of its own, and latency back under the
// threshold: a server starved of CPU reads its sockets too seldom to
// refuse what waits in them, so only latency says its queue is gone).
// Callers of a closed loop starting at once look like a spike in their
// first windows; a closed loop that comes and goes (a load test's
// rounds, a batch started every few seconds) would otherwise be cut a
// little more at each start until the limit was under the loop's size,
// where its refusals give the same sign a growing queue does and keep
// cutting it.
//
// Otherwise, when the window used at least half the limit, it grows by
// √limit.
//
// The latency learned is that of requests that succeeded, and of those
// dropped — their caller gave up waiting — when they waited longer than
// the last window's threshold: under overload so deep that every call
// misses its deadline nothing succeeds, and without the drops the limit
// would learn nothing while the queue grows. A drop's wait is a lower
// bound of its latency; a shorter one says nothing (and a client could
// send calls with tiny deadlines to pull the mean down or to make the
// queue look as if it grew). A Limiter is safe for concurrent use:
// Acquire on arrival, Release when the request ends.
package limiter

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Options bound and tune the limit; zero fields take the defaults.
type Options struct {
	// Initial, Min and Max bound the limit. Defaults 50, 4, 2000.
	Initial, Min, Max int
	// Interval is how often the limit is adjusted. Default 100ms.
	Interval time.Duration
	// CPUThreshold is the CPU utilisation (0-1 of the cores the process
	// may use) above which the limit shrinks. Default 0.9.
	CPUThreshold float64
	// Tolerance is how far the mean latency may rise above its baseline
	// before the limit shrinks. Default 2.
	Tolerance float64
	// MinQueueDelay is how far the mean latency must also rise above its
	// baseline, in absolute terms, before the limit shrinks: a server
	// whose calls take 100µs is not overloaded when queueing makes them
	// take 300µs, it is merely busy, and shedding would turn a closed
	// loop of callers into errors for no gain. Default 1ms.
	MinQueueDelay time.Duration
	// BaselineWindows is how many intervals the latency baseline
	// remembers. Default 100 (10s).
	BaselineWindows int
	// Decrease multiplies the limit when the CPU is over its threshold,
	// and at least when latency is over its tolerance; the more latency
	// is over it, the deeper the cut, down to half. Default 0.9.
	Decrease float64
	// CPU returns the process's CPU utilisation since its previous call
	// (0-1); nil means latency alone decides.
	CPU func() float64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Initial <= 0 {
		o.Initial = 50
	}
	if o.Min <= 0 {
		o.Min = 4
	}
	if o.Max <= 0 {
		o.Max = 2000
	}
	o.Initial = min(max(o.Initial, o.Min), o.Max)
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.CPUThreshold <= 0 {
		o.CPUThreshold = 0.9
	}
	if o.Tolerance <= 0 {
		o.Tolerance = 2
	}
	if o.MinQueueDelay <= 0 {
		o.MinQueueDelay = time.Millisecond
	}
	if o.BaselineWindows <= 0 {
		o.BaselineWindows = 100
	}
	if o.Decrease <= 0 || o.Decrease >= 1 {
		o.Decrease = 0.9
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Outcome is how a request Acquire admitted ended, for Release.
type Outcome int32

const (
	// Failed: it ended in an error that says nothing about load (a
	// request refused early, a stream the client reset); its latency is
	// not learned.
	Failed Outcome = iota
	// Succeeded: its latency is learned.
	Succeeded
	// Dropped: its caller gave up waiting (its deadline passed, or it
	// cancelled) before it ended; its wait is learned, and counts as a
	// sign of a growing queue, when over the threshold (see the package
	// documentation).
	Dropped
)

// Limiter is an adaptive concurrency limit.
type Limiter struct {
	opts     Options
	inFlight atomic.Int64
	limit    atomic.Int64

	refused atomic.Int64 // refusals in the current window
	winLow  atomic.Int64 // fewest in flight after a release in the current window, plus one (0: none yet)
	drops   atomic.Int64 // drops learned in the current window
	// The current window, updated without a lock by every release (so
	// that calls on many cores do not queue for one); the release that
	// finds the window over adjusts the limit under mu.
	winSum  atomic.Int64 // latencies learned, ns
	winN    atomic.Int64
	winPeak atomic.Int64 // most in flight seen
	winEnd  atomic.Int64 // when the window ends, Unix ns
	// dropFloor is the latency threshold of the last window with one
	// (ns; 0 before any): drops that waited longer are learned.
	dropFloor atomic.Int64

	mu    sync.Mutex
	value float64
	grew  bool // the last window's peak grew past the previous second's
	// ceiling is where the limit was before the cuts since it was last
	// there (0: none to undo).
	ceiling float64
	peaks   []peak    // the most in flight in each of the previous windows, newest last
	means   []float64 // window means, newest last, for the baseline
}

// New returns a Limiter.
func New(o Options) *Limiter {
	o = o.withDefaults()
	l := &Limiter{opts: o, value: float64(o.Initial)}
	l.winEnd.Store(o.Now().Add(o.Interval).UnixNano())
	l.limit.Store(int64(o.Initial))
	return l
}

// Limit returns the current limit.
func (l *Limiter) Limit() int { return int(l.limit.Load()) }

// InFlight returns the requests admitted and not yet released.
func (l *Limiter) InFlight() int { return int(l.inFlight.Load()) }

// Full reports whether a request arriving now would be shed, without
// admitting it: the cheap early check before a stream is built.
func (l *Limiter) Full() bool { return l.inFlight.Load() >= l.limit.Load() }

// Acquire admits a request when fewer than Limit are in flight: ok, and
// the count in flight with it (its peak), to give Release when it ends.
// It reports !ok when the request must be shed.
func (l *Limiter) Acquire() (peak int, ok bool) {
	n := l.inFlight.Add(1)
	if n > l.limit.Load() {
		l.inFlight.Add(-1)
		l.refused.Add(1)
		return 0, false
	}
	return int(n), true
}

// Release ends a request Acquire admitted with peak, after latency (for
// a drop: until its caller gave up), learned as its outcome says.
func (l *Limiter) Release(peak int, latency time.Duration, outcome Outcome) {
	n := l.inFlight.Add(-1) + 1
	for low := l.winLow.Load(); (low == 0 || n < low) && !l.winLow.CompareAndSwap(low, n); low = l.winLow.Load() {
	}
	learn := outcome == Succeeded
	if outcome == Dropped {
		floor := l.dropFloor.Load()
		if learn = floor > 0 && int64(latency) > floor; learn {
			l.drops.Add(1)
		}
	}
	if learn && latency > 0 {
		l.winSum.Add(int64(latency))
		l.winN.Add(1)
	}
	for p := l.winPeak.Load(); int64(peak) > p && !l.winPeak.CompareAndSwap(p, int64(peak)); p = l.winPeak.Load() {
	}
	now := l.opts.Now().UnixNano()
	if now < l.winEnd.Load() || !l.mu.TryLock() {
		return
	}
	defer l.mu.Unlock()
	if now < l.winEnd.Load() {
		return // another release just ended the window
	}
	l.adjust(now, float64(l.winSum.Swap(0)), int(l.winN.Swap(0)), int(l.winPeak.Swap(0)), int(l.winLow.Swap(0))-1)
	l.winEnd.Store(now + int64(l.opts.Interval))
}

// peak is the most in flight in a window, and when the window ended.
type peak struct {
	n   int
	end int64 // Unix ns
}

// growthWindows is how many intervals back a growing queue is judged
// against: the previous second, by the clock. Windows end only when calls
// end, so after a quiet spell the last windows can be much older than
// that; their peaks no longer say what the queue was.
const growthWindows = 10

// adjust sets the limit from the window that just ended (at now): the sum
// and count of the latencies learned, the most and the fewest in flight.
// l.mu held.
func (l *Limiter) adjust(now int64, winSum float64, winN, winPeak, winLow int) {
	o := l.opts
	// Is the queue growing (see the package documentation)? A closed loop
	// of c callers never has more than c in flight, however its calls
	// bunch up; arrivals beyond what the server completes push the peak
	// past every recent one. The window's peak is of the calls that ended
	// in it; under a spike few do, so the calls in flight now count too.
	since := now - int64(growthWindows)*int64(o.Interval)
	for len(l.peaks) > 0 && (l.peaks[0].end < since || len(l.peaks) >= growthWindows) {
		l.peaks = l.peaks[1:]
	}
	prev := 0
	for _, p := range l.peaks {
		prev = max(prev, p.n)
	}
	level := max(winPeak, int(l.inFlight.Load()))
	grew := level > prev+max(8, prev/8)
	refused, dropped := l.refused.Swap(0) > 0, l.drops.Swap(0) > 0
	// The calls that made the queue grow show their latency only when
	// they end, a window later, so growth is a sign for that window too.
	growing := grew || l.grew || refused || dropped
	calm := !grew && !refused && !dropped // no sign of its own
	l.grew = grew
	l.peaks = append(l.peaks, peak{level, now})
	start := l.winEnd.Load() - int64(o.Interval)
	if now-start >= int64(growthWindows)*int64(o.Interval) && winLow < int(l.value) && !refused && !dropped && l.ceiling > 0 {
		// No call ended for a second, with places free and no call turned
		// away: the server was quiet (a stuck one has every place taken),
		// whatever the cuts were for is over, and the load to come starts
		// from where the limit was.
		l.value, l.ceiling = math.Max(l.value, l.ceiling), 0
	}
	overCPU := o.CPU != nil && o.CPU() >= o.CPUThreshold
	cut, hold := 1.0, false
	if overCPU {
		cut = o.Decrease
	}
	if winN > 0 {
		mean := winSum / float64(winN)
		base := mean
		for _, m := range l.means {
			base = math.Min(base, m)
		}
		// Over the threshold the limit is cut in proportion to the
		// queueing, as Netflix's gradient limit does (a limit far too high
		// for the load halves each interval); within half the absolute
		// margin of it, it holds, so that it settles instead of swinging
		// between growth and cuts.
		threshold := math.Max(o.Tolerance*base, base+float64(o.MinQueueDelay))
		l.dropFloor.Store(int64(threshold))
		switch {
		case mean > threshold && growing:
			cut = math.Min(cut, math.Max(0.5, math.Min(o.Decrease, threshold/mean)))
		case mean > threshold-float64(o.MinQueueDelay)/2:
			hold = true
		}
		l.means = append(l.means, mean)
		if len(l.means) > o.BaselineWindows {
			l.means = l.means[1:]
		}
	}
	if !growing {
		cut = 1
	}
	switch {
	case cut < 1:
		l.ceiling = math.Max(l.ceiling, l.value)
		l.value = math.Max(float64(o.Min), l.value*cut)
	case calm && winN > 0 && !hold && l.value < l.ceiling:
		// The cuts were for a burst that passed, not for overload (see the
		// package documentation): undone, as TCP undoes a spurious cut of
		// its window.
		l.value = math.Min(l.ceiling, 2*l.value)
		if l.value >= l.ceiling {
			l.ceiling = 0
		}
	case !hold && float64(winPeak) >= l.value/2:
		l.value = math.Min(float64(o.Max), l.value+math.Sqrt(l.value))
	}
	l.limit.Store(int64(math.Round(l.value)))
}
