package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/jwt"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/balancer/connections"
	"github.com/kuberpc/kuberpc/internal/attempts"
	"github.com/kuberpc/kuberpc/internal/rpcmetrics"
	"github.com/kuberpc/kuberpc/internal/tracecontext"
	"github.com/kuberpc/kuberpc/security"
)

// Dial returns a grpc.ClientConn for target with kuberpc's defaults (see
// the package documentation and the Options). Like grpc.NewClient it does
// not connect until the first RPC. The caller closes the connection.
func Dial(target string, opts ...Option) (*grpc.ClientConn, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("kuberpc/client: %w", err)
	}
	sc, err := serviceConfigJSON(o)
	if err != nil {
		return nil, fmt.Errorf("kuberpc/client: %w", err)
	}
	var closeCreds func()
	if o.tls != nil {
		if o.creds, closeCreds, err = security.ClientCredentials(*o.tls); err != nil {
			return nil, fmt.Errorf("kuberpc/client: %w", err)
		}
	}
	var perRPC []grpc.DialOption
	if o.tokenFile != "" {
		if _, err := os.Stat(o.tokenFile); err != nil {
			return nil, fmt.Errorf("kuberpc/client: token file: %w", err)
		}
		tc, err := jwt.NewTokenFileCallCredentials(o.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("kuberpc/client: token file %s: %w", o.tokenFile, err)
		}
		perRPC = append(perRPC, grpc.WithPerRPCCredentials(tc))
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(o.creds),
		grpc.WithDefaultServiceConfig(sc),
		// The flow-control windows stay grpc-go's, sized by its
		// bandwidth-delay estimation: static ones (the server's, see
		// server.Transport) cost a client 4-18 % of its QPS at one call
		// at a time (bench: raw grpc-go with both sides static, 0.82-0.96
		// of raw's QPS at 1 B; with the server's alone, level), whatever
		// they save in pings. WithDialOptions can set static ones; they
		// come later and win.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                30 * time.Second,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
	}
	var m *rpcmetrics.Metrics
	if !o.noMetrics {
		if m, err = rpcmetrics.New("client", o.registerer); err != nil {
			return nil, fmt.Errorf("kuberpc/client: register metrics: %w", err)
		}
		if o.pickMetrics {
			picks, err := newPickCounter(o.registerer)
			if err != nil {
				return nil, fmt.Errorf("kuberpc/client: register metrics: %w", err)
			}
			dopts = append(dopts, grpc.WithStatsHandler(picks))
		}
	}
	// Without a tracer of its own the client still carries the caller's
	// W3C trace context on, so a trace stays whole through this process.
	ic := interceptors{metrics: m, propagate: o.tracer == nil, tried: attempts.Honoured(o.balancer)}
	if o.defaultDeadline > 0 {
		ic.deadline = newDefaultDeadlines(o.defaultDeadline)
	}
	if o.refusalRetries > 0 {
		ic.refused = newRefusalRetrier(o.refusalRetries)
	}
	if o.hedgingGiven && len(o.hedged) == 0 {
		return nil, errors.New("kuberpc/client: WithHedging names no method; it hedges only the methods it names")
	}
	if len(o.hedged) > 0 {
		h := o.hedging
		if h.MaxAttempts < 2 || h.MaxAttempts > 5 {
			return nil, fmt.Errorf("kuberpc/client: hedging policy: MaxAttempts %d, want 2-5", h.MaxAttempts)
		}
		if h.Delay < 0 {
			return nil, fmt.Errorf("kuberpc/client: hedging policy: Delay %v, want 0 or more", h.Delay)
		}
		names, err := parseNames(o.hedged, "hedged")
		if err != nil {
			return nil, fmt.Errorf("kuberpc/client: %w", err)
		}
		ic.hedge = &hedger{policy: h, methods: names}
	}
	dopts = append(dopts,
		grpc.WithChainUnaryInterceptor(append([]grpc.UnaryClientInterceptor{ic.unary}, o.unary...)...),
		grpc.WithChainStreamInterceptor(append([]grpc.StreamClientInterceptor{ic.stream}, o.stream...)...))
	if o.tracer != nil {
		dopts = append(dopts, grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(o.tracer), otelgrpc.WithPropagators(tracecontext.Propagator))))
	}
	dopts = append(dopts, perRPC...)
	cc, err := grpc.NewClient(target, append(dopts, o.dialOptions...)...)
	if err != nil {
		if closeCreds != nil {
			closeCreds()
		}
		return nil, fmt.Errorf("kuberpc/client: dial %s: %w", target, err)
	}
	if closeCreds != nil {
		// The TLS files are watched for the connection's life.
		go func() {
			for s := cc.GetState(); s != connectivity.Shutdown; s = cc.GetState() {
				cc.WaitForStateChange(context.Background(), s)
			}
			closeCreds()
		}()
	}
	return cc, nil
}

// newOptions applies opts to kuberpc's defaults and checks the result.
func newOptions(opts []Option) (options, error) {
	o := options{
		balancer:         "round_robin",
		retry:            DefaultRetryPolicy,
		defaultDeadline:  10 * time.Second,
		creds:            insecure.NewCredentials(),
		registerer:       prometheus.DefaultRegisterer,
		outlier:          &DefaultOutlierDetection,
		refusalRetries:   DefaultRefusalRetries,
		connsPerEndpoint: 1,
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.defaultDeadline < 0 {
		return o, fmt.Errorf("default deadline %s is negative", o.defaultDeadline)
	}
	if o.connsPerEndpoint < 1 || o.connsPerEndpoint > connections.MaxPerEndpoint {
		return o, fmt.Errorf("connections per endpoint %d: want 1-%d", o.connsPerEndpoint, connections.MaxPerEndpoint)
	}
	if o.refusalRetries < 0 || o.refusalRetries > 5 {
		return o, fmt.Errorf("refusal retries %d out of range 0-5", o.refusalRetries)
	}
	return o, nil
}

type interceptors struct {
	metrics   *rpcmetrics.Metrics
	deadline  *defaultDeadlines // nil: no default deadline
	hedge     *hedger
	refused   *refusalRetrier
	propagate bool
	// tried: the balancing policy sends a call's retries and hedges to
	// the endpoints it has not tried, and tells streams from unary calls,
	// when the call's context carries their record (package attempts).
	tried bool
}

func (ic interceptors) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if ic.propagate {
		ctx = tracecontext.Inject(ctx)
	}
	if ic.deadline != nil {
		if _, ok := ctx.Deadline(); !ok {
			var release func()
			ctx, release = ic.deadline.withDefault(ctx)
			defer release()
		}
	}
	if ic.tried {
		ctx = attempts.NewContext(ctx)
	}
	return ic.invoke(ctx, method, req, reply, cc, invoker, opts...)
}

// invoke makes the call through the hedger or the refusal retrier and
// records it.
func (ic interceptors) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if ic.metrics == nil {
		return deadlineError(ctx, ic.attempt(ctx, method, req, reply, cc, invoker, opts...))
	}
	mm := ic.metrics.Method(method, rpcmetrics.Unary)
	start := time.Now()
	mm.Start()
	err := deadlineError(ctx, ic.attempt(ctx, method, req, reply, cc, invoker, opts...))
	mm.Done(status.Code(err), time.Since(start))
	return err
}

// attempt makes the call, hedged or not, retrying refusals; it builds no
// closure unless the call is hedged.
func (ic interceptors) attempt(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	switch {
	case ic.hedge.applies(method):
		// Each hedged attempt retries its own refusals.
		return ic.hedge.invoke(ctx, method, req, reply, cc, ic.retryRefused(invoker), opts...)
	case ic.refused != nil:
		return ic.refused.invoke(ctx, method, req, reply, cc, invoker, opts...)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// retryRefused wraps invoker in the refusal retrier, when there is one.
func (ic interceptors) retryRefused(invoker grpc.UnaryInvoker) grpc.UnaryInvoker {
	if ic.refused == nil {
		return invoker
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		return ic.refused.invoke(ctx, method, req, reply, cc, invoker, opts...)
	}
}

// stream records the stream's start; streams are counted as done when
// they are established or fail to be, because their end is not observable
// here without wrapping every message.
func (ic interceptors) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if ic.propagate {
		ctx = tracecontext.Inject(ctx)
	}
	if ic.tried {
		ctx = attempts.NewStreamContext(ctx)
	}
	if ic.metrics == nil {
		return streamer(ctx, desc, cc, method, opts...)
	}
	mm := ic.metrics.Method(method, rpcmetrics.StreamType(desc.ClientStreams, desc.ServerStreams))
	start := time.Now()
	mm.Start()
	cs, err := streamer(ctx, desc, cc, method, opts...)
	mm.Done(status.Code(err), time.Since(start))
	return cs, err
}
