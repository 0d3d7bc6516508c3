package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	// Compressed requests are read, as every gRPC runtime reads them
	// (see Limits.StalledWriteTimeout for the replies).
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/reflection"

	"github.com/kuberpc/kuberpc/internal/limiter"
	"github.com/kuberpc/kuberpc/internal/rpcmetrics"
	"github.com/kuberpc/kuberpc/internal/tracecontext"
)

// ErrDrainTimeout is returned by Shutdown when the drain timeout expired
// with RPCs still running; they were cancelled. (Run returns nil then: the
// drain did its job.)
var ErrDrainTimeout = errors.New("kuberpc/server: drain timeout expired, remaining RPCs cancelled")

// ErrDrainCut is returned by Shutdown when its context ended the drain
// before the RPCs in flight did, and by Run after a second SIGTERM or
// SIGINT during the drain; the RPCs still running were cancelled.
var ErrDrainCut = errors.New("kuberpc/server: drain cut short, remaining RPCs cancelled")

// ErrServerStopped is returned by Serve after Shutdown has begun.
var ErrServerStopped = errors.New("kuberpc/server: server stopped")

// Server is a grpc.Server with kuberpc's runtime around it. Register
// services with RegisterService (it is a grpc.ServiceRegistrar) before
// calling Serve or Run. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	rpcLevel slog.Level
	grpc     *grpc.Server
	health   *health.Server
	metrics  *rpcmetrics.Metrics
	gatherer prometheus.Gatherer
	load     *loadReporter
	tracer   func(context.Context) error // shuts the tracer provider down; may be nil

	mu       sync.Mutex
	services []string
	draining bool
	httpSrvs []*http.Server
	addr     net.Addr

	longLived         map[string]bool
	exempt            map[string]bool // monitoring methods: never counted or shed
	knownOnce         sync.Once
	known             map[string]bool   // registered methods (true: it streams), read on the first RPC
	methodsSeen       sync.Map          // registered method name -> its *rpcmetrics.Method, once called
	limitGauge        *limitGauge       // exports the adaptive limit; nil without one
	work              atomic.Int64      // non-monitoring handlers running
	held              atomic.Int64      // admissions holding their place (see admission)
	pending           pendingAdmissions // admissions whose handler has not started
	janitorOnce       sync.Once
	janitorStopOnce   sync.Once
	janitorStop       chan struct{} // closed when the server has stopped
	conns             sync.Map      // connID → *trackedConn, the connections Serve accepted
	openConns         atomic.Int64  // connections Serve accepted and has not closed
	connsRefused      prometheus.Counter
	connRefusals      atomic.Int64     // refused since the last log line
	connRefusalLogged atomic.Int64     // unix nanoseconds of that line
	limiter           *limiter.Limiter // adaptive shedding; nil when off
	refusals          *refusals
	methodLimits      map[string]*methodLimit // Limits.MethodLimits; read-only after New
	auth              *authState              // authentication and authorization; nil when off
	closers           []func()                // run when the server has stopped (TLS file watchers)
	propagate         bool                    // tracing is off: carry the caller's trace context ourselves
	stopping          context.Context         // done when GracefulStop begins
	stop              context.CancelCauseFunc
	hardStop          context.Context // done when the drain timeout expires
	hardCancel        context.CancelCauseFunc
	shutdownOnce      sync.Once
	shutdownErr       error
	shutdownDone      chan struct{}
}

// New returns a Server configured by opts. It fails if the configuration
// is invalid (the error names the setting) or the metrics cannot be
// registered.
func New(opts ...Option) (*Server, error) {
	o := options{config: DefaultConfig()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	cfg := o.config
	if cfg.LogLevel == nil {
		cfg.LogLevel = slog.LevelInfo
	}
	if cfg.RPCLogLevel == nil {
		cfg.RPCLogLevel = slog.LevelDebug
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	o.logger = slog.New(traceLogHandler{o.logger.Handler()})
	if cfg.PodName != "" {
		o.logger = o.logger.With("pod", cfg.PodName)
	}
	if o.registerer == nil {
		o.registerer, o.gatherer = prometheus.DefaultRegisterer, prometheus.DefaultGatherer
	}
	m, err := rpcmetrics.New("server", o.registerer)
	if err != nil {
		return nil, fmt.Errorf("register server metrics: %w", err)
	}
	s := &Server{
		cfg:          cfg,
		log:          o.logger,
		rpcLevel:     cfg.RPCLogLevel.Level(),
		health:       health.NewServer(),
		metrics:      m,
		gatherer:     o.gatherer,
		longLived:    map[string]bool{},
		exempt:       map[string]bool{},
		janitorStop:  make(chan struct{}),
		refusals:     newRefusals(cfg.Limits),
		methodLimits: newMethodLimits(cfg.Limits.MethodLimits),
		shutdownDone: make(chan struct{}),
	}
	s.load = newLoadReporter(m, o.utilization)
	s.propagate = o.tracer == nil && cfg.OTLPEndpoint == ""
	s.stopping, s.stop = context.WithCancelCause(context.Background())
	s.hardStop, s.hardCancel = context.WithCancelCause(context.Background())
	for _, m := range exemptMethods {
		s.exempt[m] = true
	}
	if cfg.Limits.AdaptiveShedding {
		// Start open: the limit shrinks on evidence of queueing, so a
		// server that is merely busy never sheds.
		s.limiter = limiter.New(limiter.Options{
			Initial: cfg.Limits.MaxHandlers, Min: 2 * runtime.GOMAXPROCS(0), Max: cfg.Limits.MaxHandlers,
		})
		s.load.limit = func() float64 { return float64(s.limiter.Limit()) }
		g, err := rpcmetrics.RegisterShared(o.registerer, newLimitGauge())
		if err != nil {
			return nil, fmt.Errorf("register server metrics: %w", err)
		}
		g.add(s.limiter)
		s.limitGauge = g
	}
	if s.connsRefused, err = rpcmetrics.RegisterShared(o.registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kuberpc_server_connections_refused_total",
		Help: "Connections to the gRPC port closed as they were accepted, the server holding MAX_CONNECTIONS.",
	})); err != nil {
		return nil, fmt.Errorf("register server metrics: %w", err)
	}
	for _, m := range append(slices.Clone(defaultLongLived), o.longLived...) {
		s.longLived["/"+strings.TrimPrefix(m, "/")] = true
	}

	tp := o.tracer
	if tp == nil && cfg.OTLPEndpoint != "" {
		p, shutdown, err := newOTLPTracerProvider(cfg)
		if err != nil {
			return nil, err
		}
		tp, s.tracer = p, shutdown
	}

	secOpts, err := s.newSecurity(cfg.Security, &o, o.registerer)
	if err != nil {
		return nil, err
	}
	gopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{s.unaryInterceptor}, o.unary...)...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{s.streamInterceptor}, o.stream...)...),
		grpc.MaxRecvMsgSize(cfg.Limits.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.Limits.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(cfg.Limits.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(cfg.Limits.MaxHeaderListSize),
		grpc.InTapHandle(s.tapHandle),
		grpc.NumStreamWorkers(uint32(cfg.Transport.StreamWorkers)),
		grpc.UnknownServiceHandler(unknownMethod),
		grpc.KeepaliveParams(keepaliveParams(cfg.Keepalive)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             orTiny(cfg.Keepalive.MinClientTime),
			PermitWithoutStream: true,
		}),
	}
	gopts = append(gopts, secOpts...)
	if tp != nil {
		gopts = append(gopts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(tracecontext.Propagator))))
	}
	if cfg.ORCAPerCall {
		// grpc-go sends a per-call report only when the handler asked for
		// the call's recorder; the innermost interceptor asks for it.
		gopts = append(gopts, orca.CallMetricsServerOption(s.load),
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				orca.CallMetricsRecorderFromContext(ctx)
				return h(ctx, req)
			}),
			grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				orca.CallMetricsRecorderFromContext(ss.Context())
				return h(srv, ss)
			}))
	}
	if !cfg.Transport.DynamicWindows {
		gopts = append(gopts, grpc.InitialWindowSize(cfg.Transport.StreamWindow), grpc.InitialConnWindowSize(cfg.Transport.ConnWindow))
	}
	s.grpc = grpc.NewServer(append(gopts, o.grpcOptions...)...)

	healthpb.RegisterHealthServer(s.grpc, s.health)
	if !o.noReflection {
		reflection.Register(s.grpc)
	}
	if err := orca.Register(s.grpc, orca.ServiceOptions{ServerMetricsProvider: s.load}); err != nil {
		s.close()
		return nil, fmt.Errorf("register ORCA service: %w", err)
	}
	applyMemoryLimit(cfg.MemoryLimit, s.log)
	return s, nil
}

// keepaliveParams translates k into grpc-go's terms, where a zero field
// means "grpc-go's default" rather than zero.
func keepaliveParams(k Keepalive) keepalive.ServerParameters {
	p := keepalive.ServerParameters{
		Time:                  k.Time,
		Timeout:               k.Timeout,
		MaxConnectionAge:      k.MaxConnectionAge, // 0: none, as in grpc-go
		MaxConnectionAgeGrace: orTiny(k.MaxConnectionAgeGrace),
	}
	if k.Time == 0 {
		p.Time = Forever // no pings
	}
	return p
}

// orTiny turns a zero duration into the smallest one, for grpc-go
// settings where zero would mean a default instead.
func orTiny(d time.Duration) time.Duration {
	if d == 0 {
		return time.Nanosecond
	}
	return d
}

// Config returns the validated configuration.
func (s *Server) Config() Config { return s.cfg }

// Addr returns the address the gRPC listener accepts on, once Serve or
// Run has started (with PORT 0, the port chosen); nil before.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// RegisterService registers a service implementation, as
// grpc.Server.RegisterService does, and marks it SERVING in the health
// service. It must be called before Serve.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
	s.mu.Lock()
	s.services = append(s.services, desc.ServiceName)
	s.mu.Unlock()
}

// GRPC returns the underlying grpc.Server, for what kuberpc does not wrap.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Health returns the health service, to mark services NOT_SERVING while a
// dependency is down. Drain overrides it: once Shutdown starts, every
// service reports NOT_SERVING.
func (s *Server) Health() *health.Server { return s.health }

// Serve accepts gRPC connections on lis until Shutdown. It marks the server
// and every registered service SERVING, and starts load reporting. It
// returns nil after a Shutdown, or the error that stopped it.
//
// Limits.StalledWriteTimeout closes the connections of clients that stop
// reading only for connections whose RemoteAddr is a *net.TCPAddr or a
// *net.UnixAddr, the same one on every call, as net's are; connections
// of a listener that makes up a new address on each call are left
// unwatched.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return ErrServerStopped
	}
	if err := errors.Join(s.checkMethodLimits(), s.checkPolicy()); err != nil {
		s.mu.Unlock()
		// The server cannot serve as configured: release its stream
		// workers and the rest now, whether or not Shutdown follows.
		s.grpc.Stop()
		return err
	}
	s.addr = lis.Addr()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, name := range s.services {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.mu.Unlock()
	s.load.start()
	s.janitorOnce.Do(func() { go s.janitor(s.janitorStop) })
	s.log.Info("serving gRPC", "addr", lis.Addr().String())
	err := s.grpc.Serve(trackingListener{Listener: lis, s: s})
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// checkMethodLimits reports the names in Limits.MethodLimits that no
// registered service has: a limit on a misspelt method would limit
// nothing.
func (s *Server) checkMethodLimits() error {
	var unknown []string
	for m := range s.methodLimits {
		if s.metricName(m) != m {
			unknown = append(unknown, m)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("invalid METHOD_LIMITS: %s: no registered service has this method", strings.Join(unknown, ", "))
}

// Run listens on Config.Port (all interfaces) for gRPC and on
// Config.MetricsPort for /metrics, /healthz and /readyz, serves until ctx is
// done or the process receives SIGTERM or SIGINT, then drains (see
// Shutdown). It returns nil after a drain, also one that reached its
// timeout (the drain did its job, and the process should exit 0; the log
// says which RPCs were cut); it returns an error when serving failed.
//
// A second SIGTERM or SIGINT stops the server at once, as someone
// pressing Ctrl-C twice means (Kubernetes sends one): the RPCs still
// running are cancelled, Run returns ErrDrainCut within 0.5s, and the
// process should exit 1, as controller-runtime's signal handler does.
// Run counts the signals it receives itself, so a ctx done on the same
// signal (signal.NotifyContext in main) does not make that one the
// second.
func (s *Server) Run(ctx context.Context) error {
	// One channel for both signals, registered before serving: the first
	// starts the drain, the second cuts it.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	lis, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen on PORT %d: %w", s.cfg.Port, err)
	}
	errc := make(chan error, 2)
	if s.cfg.MetricsPort >= 0 {
		hl, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(s.cfg.MetricsPort)))
		if err != nil {
			lis.Close()
			return fmt.Errorf("listen on METRICS_PORT %d: %w", s.cfg.MetricsPort, err)
		}
		go func() { errc <- s.ServeHTTP(hl) }()
	}
	go func() { errc <- s.Serve(lis) }()
	received := 0 // signals, by sigs
	select {
	case err := <-errc:
		if err != nil {
			s.Shutdown(context.Background())
			return err
		}
	case <-ctx.Done():
		s.log.Info("drain requested", "reason", context.Cause(ctx).Error())
	case sig := <-sigs:
		s.log.Info("drain requested", "reason", "signal: "+sig.String())
		received = 1
	}
	cut, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	drained := make(chan struct{})
	defer close(drained)
	go func() {
		for {
			select {
			case sig := <-sigs:
				if received++; received == 2 {
					cancel(fmt.Errorf("second signal during the drain: %v", sig))
					return
				}
			case <-drained:
				return
			}
		}
	}()
	err = s.Shutdown(cut)
	if cause := context.Cause(cut); cause != nil && !errors.Is(err, ErrDrainCut) {
		// The drain had nothing left to cut; the signal still asked for
		// a stop at once.
		err = fmt.Errorf("%w: %w", ErrDrainCut, cause)
	}
	if err != nil && !errors.Is(err, ErrDrainTimeout) {
		return err
	}
	return nil
}

// limitGauge exports kuberpc_server_concurrency_limit for the Servers
// registered with one registry: the lowest of their adaptive limits, the
// one nearest to shedding. A process normally has one Server; tests and
// programs serving several ports share the default registry between
// theirs, and a second gauge of the same name could not be registered.
// A Server leaves it when it shuts down.
type limitGauge struct {
	desc *prometheus.Desc

	mu       sync.Mutex
	limiters []*limiter.Limiter
}

func newLimitGauge() *limitGauge {
	return &limitGauge{desc: prometheus.NewDesc("kuberpc_server_concurrency_limit",
		"The adaptive concurrency limit: RPCs beyond it in flight are shed.", nil, nil)}
}

func (g *limitGauge) add(l *limiter.Limiter) {
	g.mu.Lock()
	g.limiters = append(g.limiters, l)
	g.mu.Unlock()
}

func (g *limitGauge) remove(l *limiter.Limiter) {
	g.mu.Lock()
	g.limiters = slices.DeleteFunc(g.limiters, func(x *limiter.Limiter) bool { return x == l })
	g.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (g *limitGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector.
func (g *limitGauge) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.limiters) == 0 {
		return
	}
	lowest := g.limiters[0].Limit()
	for _, l := range g.limiters[1:] {
		lowest = min(lowest, l.Limit())
	}
	ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(lowest))
}
