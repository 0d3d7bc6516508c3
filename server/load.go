package server

import (
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

// loadReporter computes the ORCA load report (CPU utilisation of this
// process, RPS, errors per second) once per loadInterval and serves it,
// with the live in-flight count, to the ORCA service (out of band) and to
// per-call reports. The application utilisation, when the server has
// one, is read live at each report.
type loadReporter struct {
	metrics *rpcmetrics.Metrics
	app     func() float64 // application utilization; may be nil
	limit   func() float64 // adaptive concurrency limit; may be nil
	last    atomic.Pointer[orca.ServerMetrics]

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
		// Balancers that read ORCA see how close a shedding replica is.
		sm.NamedMetrics["concurrency_limit"] = l.limit()
	}
	if l.app != nil {
		// Live, not the once-a-second snapshot: weights computed from a
		// stale utilisation make every client herd onto the replica that
		// looked idle a second ago.
		sm.AppUtilization = max(l.app(), 0)
	}
	return &sm
}

func (l *loadReporter) start() {
	l.startOnce.Do(func() {
		if l.app != nil {
			sm := *l.last.Load()
			sm.AppUtilization = max(l.app(), 0)
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
	cpuUtil := cpuSampler()
	prevAt := time.Now()
	prevTotal, prevErrs := l.metrics.Totals()
	for {
		select {
		case <-l.done:
			return
		case now := <-t.C:
			total, errs := l.metrics.Totals()
			wall := now.Sub(prevAt).Seconds()
			if wall <= 0 {
				continue
			}
			util := cpuUtil()
			sm := &orca.ServerMetrics{
				CPUUtilization: max(util, 0),
				MemUtilization: -1,
				AppUtilization: -1,
				QPS:            float64(total-prevTotal) / wall,
				EPS:            float64(errs-prevErrs) / wall,
				Utilization:    map[string]float64{},
				RequestCost:    map[string]float64{},
				NamedMetrics:   map[string]float64{},
			}
			if l.app != nil {
				sm.AppUtilization = max(l.app(), 0)
			}
			l.last.Store(sm)
			prevAt, prevTotal, prevErrs = now, total, errs
		}
	}
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
