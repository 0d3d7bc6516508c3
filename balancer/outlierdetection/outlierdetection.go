// Package outlierdetection is a load-balancing policy that wraps any
// other (round_robin, p2c_ewma, weighted_round_robin, ...) and ejects the
// endpoints whose calls fail: the circuit breaker of gRPC on Kubernetes,
// where a replica can pass its health checks and still fail every call.
// Its algorithm follows grpc-go's xDS outlier detection (gRFC A50, which
// grpc-go keeps internal to xDS) and Envoy's consecutive-failure
// ejection:
//
//   - consecutive failures: an endpoint whose last ConsecutiveFailures
//     calls all failed is ejected at once;
//   - failure percentage: every Interval, an endpoint with at least
//     RequestVolume calls in the interval, among at least MinimumHosts such
//     endpoints, whose failure percentage is at least Threshold is ejected;
//   - an ejected endpoint returns after BaseEjectionTime × the number of
//     times it was ejected (capped at MaxEjectionTime); the count decays
//     while it behaves;
//   - no more than MaxEjectionPercent of the endpoints are ejected at once.
//
// A call fails when it ends with UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS
// or RESOURCE_EXHAUSTED: what says the replica is in trouble, not the
// caller. Ejection happens in the picker: a pick that lands on an ejected
// endpoint is made again (up to ten times), and if every try lands on
// one the last is used, so an outage of every replica still sends calls
// (fail open) and the child policy's own state is untouched.
//
// Importing the package registers "kuberpc_outlier_detection". Its
// configuration is
//
//	{"childPolicy": [{"round_robin": {}}], "consecutiveFailures": 5,
//	 "interval": "1s", "baseEjectionTime": "5s", "maxEjectionTime": "60s",
//	 "maxEjectionPercent": 50,
//	 "failurePercentage": {"threshold": 50, "minimumHosts": 3, "requestVolume": 20}}
//
// Package client wraps every balancer in it by default.
package outlierdetection

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/kuberpc/kuberpc/internal/childpolicy"
	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
	"github.com/kuberpc/kuberpc/internal/refusal"
	"github.com/kuberpc/kuberpc/internal/strictdecode"
)

// Name is the policy's name in service configs.
const Name = "kuberpc_outlier_detection"

// now and afterFunc are package variables so that tests can stub the
// clock, as grpc-go's policy tests do.
var (
	now       = time.Now
	afterFunc = func(d time.Duration, f func()) func() { t := time.AfterFunc(d, f); return func() { t.Stop() } }
)

func init() { balancer.Register(builder{}) }

// Config is the policy's configuration; see the package documentation.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	ChildPolicy         []map[string]json.RawMessage `json:"childPolicy"`
	ConsecutiveFailures *int                         `json:"consecutiveFailures,omitempty"`
	Interval            string                       `json:"interval,omitempty"`
	BaseEjectionTime    string                       `json:"baseEjectionTime,omitempty"`
	MaxEjectionTime     string                       `json:"maxEjectionTime,omitempty"`
	MaxEjectionPercent  *int                         `json:"maxEjectionPercent,omitempty"`
	FailurePercentage   *FailurePercentage           `json:"failurePercentage,omitempty"`

	child                      string
	childConfig                serviceconfig.LoadBalancingConfig
	consecutive                int
	interval, base, maxEjected time.Duration
	maxPercent                 int
}

// FailurePercentage configures failure-percentage ejection.
type FailurePercentage struct {
	Threshold     int `json:"threshold"`
	MinimumHosts  int `json:"minimumHosts"`
	RequestVolume int `json:"requestVolume"`
}

type builder struct{}

func (builder) Name() string { return Name }

// ParseConfig parses and checks the configuration, with the defaults of
// the package documentation for what is left out; 0 consecutive failures
// turns that kind of ejection off. Field names are case-sensitive; an
// unknown or repeated field is an error.
func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	c := &Config{}
	if err := strictdecode.JSON(js, c); err != nil {
		return nil, fmt.Errorf("%s: config: %w", Name, err)
	}
	c.consecutive, c.maxPercent = 5, 50
	if c.ConsecutiveFailures != nil {
		c.consecutive = *c.ConsecutiveFailures
	}
	if c.MaxEjectionPercent != nil {
		c.maxPercent = *c.MaxEjectionPercent
	}
	var errs []error
	dur := func(name, s string, def time.Duration) time.Duration {
		if s == "" {
			return def
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s %q: want a positive duration such as 5s", name, s))
		}
		return d
	}
	c.interval = dur("interval", c.Interval, time.Second)
	c.base = dur("baseEjectionTime", c.BaseEjectionTime, 5*time.Second)
	c.maxEjected = dur("maxEjectionTime", c.MaxEjectionTime, time.Minute)
	if c.consecutive < 0 {
		errs = append(errs, fmt.Errorf("consecutiveFailures %d: must not be negative", c.consecutive))
	}
	if c.maxPercent < 0 || c.maxPercent > 100 {
		errs = append(errs, fmt.Errorf("maxEjectionPercent %d: want 0-100", c.maxPercent))
	}
	if fp := c.FailurePercentage; fp != nil && (fp.Threshold < 0 || fp.Threshold > 100 || fp.MinimumHosts < 0 || fp.RequestVolume < 0) {
		errs = append(errs, fmt.Errorf("failurePercentage %+v: threshold 0-100, minimumHosts and requestVolume not negative", *fp))
	}
	var err error
	if c.child, c.childConfig, err = childpolicy.Parse(c.ChildPolicy); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return c, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &odBalancer{Child: childpolicy.Child{CC: cc, Opts: opts}, stats: map[string]*endpointStats{}}
	return b
}

// odBalancer sits between the channel and the child policy: it wraps the
// SubConns the child creates (to know each one's address) and the child's
// pickers (to count outcomes and skip ejected endpoints).
type odBalancer struct {
	childpolicy.Child

	mu        sync.Mutex
	cfg       *Config
	stats     map[string]*endpointStats // by address
	stopTimer func()
	closed    bool
}

// endpointStats is one address's record. Its fields are guarded by the
// balancer's mu, except ejected, which pickers read without it.
type endpointStats struct {
	// consecutive and calls are atomic: a successful call updates them
	// without the balancer's lock, so that calls on many cores do not
	// queue for it; failures take the lock.
	consecutive atomic.Int64
	calls       atomic.Int64 // in the current interval
	failures    int          // in the current interval
	ejectedAt   time.Time
	ejected     atomic.Bool
	times       int // ejections, decaying while healthy
	subConns    int // SubConns for the address
}

func (b *odBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, ok := s.BalancerConfig.(*Config)
	if !ok {
		return fmt.Errorf("%s: no configuration", Name)
	}
	b.mu.Lock()
	b.cfg = cfg
	if b.stopTimer == nil {
		b.stopTimer = afterFunc(cfg.interval, b.tick)
	}
	// Forget addresses the resolver no longer lists.
	live := map[string]bool{}
	for _, e := range s.ResolverState.Endpoints {
		for _, a := range e.Addresses {
			live[a.Addr] = true
		}
	}
	for _, a := range s.ResolverState.Addresses {
		live[a.Addr] = true
	}
	for addr, st := range b.stats {
		if !live[addr] && st.subConns == 0 {
			delete(b.stats, addr)
		}
	}
	b.mu.Unlock()
	return b.Update(cfg.child, &wrappedCC{ClientConn: b.CC, b: b}, s.ResolverState, cfg.childConfig)
}

func (b *odBalancer) Close() {
	b.mu.Lock()
	b.closed = true
	if b.stopTimer != nil {
		b.stopTimer()
	}
	b.mu.Unlock()
	b.Child.Close()
}

// wrappedCC is the child's ClientConn.
type wrappedCC struct {
	balancer.ClientConn
	b *odBalancer
}

func (w *wrappedCC) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	sc, err := w.ClientConn.NewSubConn(addrs, opts)
	if err != nil {
		return nil, err
	}
	addr := ""
	if len(addrs) > 0 {
		addr = addrs[0].Addr
	}
	w.b.mu.Lock()
	st := w.b.statsFor(addr)
	st.subConns++
	w.b.mu.Unlock()
	return newSubConn(sc, st, w.b), nil
}

func newSubConn(sc balancer.SubConn, st *endpointStats, b *odBalancer) *subConn {
	s := &subConn{SubConn: sc, st: st, b: b}
	s.record = s.recordDone
	return s
}

func (w *wrappedCC) UpdateState(s balancer.State) {
	w.ClientConn.UpdateState(balancer.State{ConnectivityState: s.ConnectivityState, Picker: &picker{child: s.Picker, b: w.b}})
}

// subConn carries its address's record, so that a pick needs no lookup.
type subConn struct {
	balancer.SubConn
	st     *endpointStats
	b      *odBalancer
	once   sync.Once
	record func(balancer.DoneInfo) // recordDone, bound once: a pick allocates nothing
}

// recordDone counts a call's outcome on the subConn's endpoint.
func (s *subConn) recordDone(di balancer.DoneInfo) {
	if _, refused := refusal.Is(di.Err); !refused {
		// A replica shedding load is working as meant, not failing:
		// ejecting it would move its load onto the others at once.
		s.b.record(s.st, endpointbalancer.ReplicaFailed(di.Err))
	}
}

func (s *subConn) Shutdown() {
	s.once.Do(func() {
		s.b.mu.Lock()
		s.st.subConns--
		s.b.mu.Unlock()
	})
	s.SubConn.Shutdown()
}

func (b *odBalancer) statsFor(addr string) *endpointStats {
	st := b.stats[addr]
	if st == nil {
		st = &endpointStats{}
		b.stats[addr] = st
	}
	return st
}

// picker skips ejected endpoints and counts outcomes.
type picker struct {
	child balancer.Picker
	b     *odBalancer
}

// maxTries is how many picks are made before an ejected endpoint is used
// anyway. With at most half the endpoints ejected, a random child lands
// on ejected ones ten times in a row less than once in a thousand picks;
// round robin never does.
const maxTries = 10

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	var res balancer.PickResult
	var sc *subConn
	for try := 0; try < maxTries; try++ {
		r, err := p.child.Pick(info)
		if err != nil {
			return r, err
		}
		s, ok := r.SubConn.(*subConn)
		if !ok {
			return r, nil // not one of ours (a child that wraps SubConns itself)
		}
		res, sc = r, s
		if !s.st.ejected.Load() {
			break
		}
	}
	res.SubConn = sc.SubConn
	done := res.Done
	if done == nil {
		res.Done = sc.record
		return res, nil
	}
	res.Done = func(di balancer.DoneInfo) {
		sc.recordDone(di)
		done(di)
	}
	return res, nil
}

// record counts one call's outcome and ejects on consecutive failures.
func (b *odBalancer) record(st *endpointStats, fail bool) {
	st.calls.Add(1)
	if !fail {
		if st.consecutive.Load() != 0 {
			st.consecutive.Store(0)
		}
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st.failures++
	n := st.consecutive.Add(1)
	if b.cfg != nil && b.cfg.consecutive > 0 && n >= int64(b.cfg.consecutive) && !st.ejected.Load() {
		b.eject(st)
	}
}

// eject ejects st unless that would pass MaxEjectionPercent. b.mu held.
func (b *odBalancer) eject(st *endpointStats) {
	ejected := 0
	for _, s := range b.stats {
		if s.ejected.Load() {
			ejected++
		}
	}
	if len(b.stats) == 0 || float64(ejected)*100/float64(len(b.stats)) >= float64(b.cfg.maxPercent) {
		return
	}
	st.ejected.Store(true)
	st.ejectedAt = now()
	st.times++
}

// tick runs the interval's evaluation and schedules the next.
func (b *odBalancer) tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.evaluate()
	b.stopTimer = afterFunc(b.cfg.interval, b.tick)
}

// evaluate applies failure-percentage ejection, returns endpoints whose
// ejection time is over, and starts a new interval. b.mu held.
func (b *odBalancer) evaluate() {
	c := b.cfg
	t := now()
	if fp := c.FailurePercentage; fp != nil {
		hosts := 0
		for _, s := range b.stats {
			if int(s.calls.Load()) >= fp.RequestVolume {
				hosts++
			}
		}
		if hosts >= fp.MinimumHosts {
			for _, s := range b.stats {
				calls := int(s.calls.Load())
				if !s.ejected.Load() && calls >= fp.RequestVolume && calls > 0 && s.failures*100 >= fp.Threshold*calls {
					b.eject(s)
				}
			}
		}
	}
	for _, s := range b.stats {
		switch {
		case s.ejected.Load():
			d := c.base * time.Duration(s.times)
			if d > max(c.base, c.maxEjected) {
				d = max(c.base, c.maxEjected)
			}
			if !t.Before(s.ejectedAt.Add(d)) {
				s.ejected.Store(false)
				s.consecutive.Store(0)
			}
		case s.times > 0:
			s.times--
		}
		s.calls.Store(0)
		s.failures = 0
	}
}
