package server

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/orca"

	"github.com/kuberpc/kuberpc/internal/rpcmetrics"
)

// loadInterval is how often the ORCA load report is recomputed.
const loadInterval = time.Second

// appSampleInterval is how often the application utilization is sampled;
// a report carries the mean of a loadInterval's samples.
const appSampleInterval = 10 * time.Millisecond

// loadReporter computes the ORCA load report (CPU utilisation of this
// process, RPS, errors per second, and the application utilisation when
// the server has one) once per loadInterval and serves it, with the live
// in-flight count, to the ORCA service (out of band) and to per-call
// reports.
//
// Every utilisation in a report is an average over the interval its RPS
// was counted in. weighted_round_robin weighs a replica by RPS ÷
// utilisation, the calls it serves per unit of utilisation: its
// capacity, steady while the load moves, as long as both figures cover
// the same time. An application utilisation read at the moment of each
// report instead would be a point sample of a gauge such as "workers
// busy": on a replica doing a few calls at a time it reads 0 one call and
// 1 the next, and the weights would jump a hundredfold with it.
type loadReporter struct {
	metrics *rpcmetrics.Metrics
	app     func() float64 // application utilization; may be nil
	limit   func() float64 // adaptive concurrency limit; may be nil
	last    atomic.Pointer[orca.ServerMetrics]

	// The application utilization's samples since the last report;
	// touched only by run.
	appSum float64
	appN   int

	startOnce, stopOnce sync.Once
	done                chan struct{}
}

func newLoadReporter(m *rpcmetrics.Metrics, app func() float64) *loadReporter {
	l := &loadReporter{metrics: m, app: app, done: make(chan struct{})}
	l.last.Store(&orca.ServerMetrics{
		CPUUtilization: -1, MemUtilization: -1, AppUtilization: -1, QPS: -1, EPS: -1,
		Utilization: map[string]float64{}, RequestCost: map[string]float64{}, NamedMetrics: map[string]float64{},
	})
	return l
}

// ServerMetrics implements orca.ServerMetricsProvider.
func (l *loadReporter) ServerMetrics() *orca.ServerMetrics {
	last := l.last.Load()
	inFlight := l.metrics.InFlight()
	sm := *last
	sm.Utilization = map[string]float64{}
	sm.RequestCost = map[string]float64{}
	sm.NamedMetrics = map[string]float64{"in_flight": float64(inFlight)}
	if l.limit != nil {
		// Balancers that read ORCA see the limit. It bounds unary
		// calls, and in_flight counts streams too: with no stream open,
		// the two say how close the replica is to shedding.
		sm.NamedMetrics["concurrency_limit"] = l.limit()
	}
	return &sm
}

func (l *loadReporter) start() {
	l.startOnce.Do(func() {
		if u, ok := l.readApp(); ok {
			sm := *l.last.Load()
			sm.AppUtilization = u
			l.last.Store(&sm)
		}
		go l.run()
	})
}

func (l *loadReporter) stop() {
	l.stopOnce.Do(func() { close(l.done) })
}

func (l *loadReporter) run() {
	t := time.NewTicker(loadInterval)
	defer t.Stop()
	var samples <-chan time.Time // nil, never ready, without an application utilization
	if l.app != nil {
		st := time.NewTicker(appSampleInterval)
		defer st.Stop()
		samples = st.C
	}
	cpuUtil := cpuSampler()
	prevAt := time.Now()
	prevTotal, prevErrs := l.metrics.Totals()
	for {
		select {
		case <-l.done:
			return
		case <-samples:
			l.sampleApp()
		case now := <-t.C:
			total, errs := l.metrics.Totals()
			wall := now.Sub(prevAt).Seconds()
			if wall <= 0 {
				continue
			}
			l.report(cpuUtil(), float64(total-prevTotal)/wall, float64(errs-prevErrs)/wall)
			prevAt, prevTotal, prevErrs = now, total, errs
		}
	}
}

// readApp reads the application utilization: a negative value counts as
// 0; NaN and infinities are no reading (a report with none leaves the
// utilization unset, and weighted_round_robin falls back on the CPU's).
func (l *loadReporter) readApp() (float64, bool) {
	if l.app == nil {
		return 0, false
	}
	u := l.app()
	if math.IsNaN(u) || math.IsInf(u, 0) {
		return 0, false
	}
	return max(u, 0), true
}

// sampleApp adds a sample of the application utilization to the next
// report's mean.
func (l *loadReporter) sampleApp() {
	if u, ok := l.readApp(); ok {
		l.appSum += u
		l.appN++
	}
}

// report stores the report of an interval with these figures and the
// mean of the application utilization's samples in it (one taken now if
// there were none).
func (l *loadReporter) report(cpu, qps, eps float64) {
	sm := &orca.ServerMetrics{
		CPUUtilization: max(cpu, 0),
		MemUtilization: -1,
		AppUtilization: -1,
		QPS:            qps,
		EPS:            eps,
		Utilization:    map[string]float64{},
		RequestCost:    map[string]float64{},
		NamedMetrics:   map[string]float64{},
	}
	if l.appN == 0 {
		l.sampleApp()
	}
	if l.appN > 0 {
		sm.AppUtilization = l.appSum / float64(l.appN)
		l.appSum, l.appN = 0, 0
	}
	l.last.Store(sm)
}

// cpuTime is the user+system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuSampler returns a function giving the process's CPU utilisation (0-1
// of GOMAXPROCS cores) since its previous call.
func cpuSampler() func() float64 {
	var mu sync.Mutex
	prevCPU, prevAt := cpuTime(), time.Now()
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		cpu, now := cpuTime(), time.Now()
		wall := now.Sub(prevAt).Seconds()
		util := 0.0
		if wall > 0 {
			util = (cpu - prevCPU).Seconds() / (wall * float64(runtime.GOMAXPROCS(0)))
		}
		prevCPU, prevAt = cpu, now
		return util
	}
}
