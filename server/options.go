package server

import (
	"github.com/kuberpc/kuberpc/codec"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"github.com/kuberpc/kuberpc/security"
)

// Option configures a Server. Options are applied in order by New.
type Option interface {
	apply(*options)
}

type options struct {
	config       Config
	logger       *slog.Logger
	registerer   prometheus.Registerer
	gatherer     prometheus.Gatherer
	tracer       trace.TracerProvider
	grpcOptions  []grpc.ServerOption
	unary        []grpc.UnaryServerInterceptor
	stream       []grpc.StreamServerInterceptor
	noReflection bool
	utilization  func() float64
	longLived    []string
	tokenReviews authnclient.TokenReviewInterface
	authorizer   *security.Authorizer
	// plaintextTokens accepts tokens without TLS (tests only).
	plaintextTokens bool
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithConfig sets the configuration; fields left zero take their defaults
// (see DefaultConfig). Without it, New uses DefaultConfig.
func WithConfig(c Config) Option {
	return optionFunc(func(o *options) { o.config = c })
}

// WithLogger sets the logger for lifecycle events and per-RPC lines.
// Default: a JSON handler on stderr at Config.LogLevel.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.logger = l })
}

// WithRegistry sets where metrics are registered and what /metrics serves.
// Default: prometheus.DefaultRegisterer and prometheus.DefaultGatherer.
// Servers in one process may share a registry: their calls are counted
// in the same series, and kuberpc_server_concurrency_limit is the lowest
// of their adaptive limits.
func WithRegistry(r *prometheus.Registry) Option {
	return optionFunc(func(o *options) { o.registerer, o.gatherer = r, r })
}

// WithTracerProvider turns tracing on with tp, whatever Config.OTLPEndpoint
// says. The Server does not shut tp down.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tracer = tp })
}

// WithGRPCOptions adds grpc.ServerOptions, applied after kuberpc's own so
// that they win.
func WithGRPCOptions(opts ...grpc.ServerOption) Option {
	return optionFunc(func(o *options) { o.grpcOptions = append(o.grpcOptions, opts...) })
}

// WithFastPath turns on kuberpc's fast path on the server, an option set
// wire-compatible with every gRPC peer: messages that vtprotobuf's code
// was generated for are marshalled by it from 1 KiB up, into pooled
// buffers (package codec). Everything else is the defaults, which
// already have static flow-control windows and stream workers
// (Transport). Bigger connection buffers are not part of it: 64 KiB ones
// (grpc-go's are 32 KiB) cost 3 % and 5 % of QPS with 64 calls in
// flight at 1 KiB and 64 KiB (none at 1 B), and gained 1-2 %, within
// the noise, with one call at a time (bench probe, 12-16 rounds).
// bench/results.md compares the fast path with raw grpc-go.
func WithFastPath() Option {
	return optionFunc(func(o *options) {
		o.grpcOptions = append(o.grpcOptions, grpc.ForceServerCodecV2(codec.New()))
	})
}

// WithUnaryInterceptors adds unary interceptors that run inside kuberpc's
// (after metrics, deadline and panic recovery are in place).
func WithUnaryInterceptors(i ...grpc.UnaryServerInterceptor) Option {
	return optionFunc(func(o *options) { o.unary = append(o.unary, i...) })
}

// WithStreamInterceptors adds stream interceptors that run inside kuberpc's.
func WithStreamInterceptors(i ...grpc.StreamServerInterceptor) Option {
	return optionFunc(func(o *options) { o.stream = append(o.stream, i...) })
}

// WithoutReflection leaves out the server reflection service.
func WithoutReflection() Option {
	return optionFunc(func(o *options) { o.noReflection = true })
}

// WithUtilization reports f's value as the ORCA application utilization
// (0 = idle, 1 = full; may exceed 1), which weighted_round_robin prefers
// over CPU utilisation. Use it when CPU is not what limits the service
// (a connection pool, a queue, a licence). f is a gauge of the moment
// ("workers busy ÷ workers"): it is sampled every 10 ms, from one
// goroutine, and each load report carries the mean of a second's samples,
// the second its RPS is counted over, so that weighted_round_robin's
// weight (RPS ÷ utilization) measures a replica's capacity instead of
// following one moment's reading. f must be cheap; a negative value
// counts as 0, and NaN or an infinity as no reading.
func WithUtilization(f func() float64) Option {
	return optionFunc(func(o *options) { o.utilization = f })
}

// WithLongLivedStreams declares streaming methods ("/pkg.Service/Method"
// or "pkg.Service/Method") whose streams live as long as the connection:
// subscriptions, watches, tunnels. When a drain reaches its graceful stop
// their handlers' contexts are cancelled and the streams end with
// UNAVAILABLE, so clients re-open them on another replica at once, instead
// of holding the drain until its timeout. grpc.health.v1 Watch and the
// ORCA report stream are always long-lived.
func WithLongLivedStreams(methods ...string) Option {
	return optionFunc(func(o *options) { o.longLived = append(o.longLived, methods...) })
}

// WithTokenReviews sets the TokenReview API through which the tokens of
// callers are checked when Security.Audience is set. Without it the
// server uses its pod's in-cluster configuration; outside a cluster, pass
// a client built from a kubeconfig (its user needs RBAC to create
// tokenreviews).
func WithTokenReviews(r authnclient.TokenReviewInterface) Option {
	return optionFunc(func(o *options) { o.tokenReviews = r })
}

// WithAuthorizer sets the authorization policy, in place of the file
// Security.PolicyFile names.
func WithAuthorizer(a *security.Authorizer) Option {
	return optionFunc(func(o *options) { o.authorizer = a })
}
