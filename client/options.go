package client

import (
	"github.com/kuberpc/kuberpc/codec"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/kuberpc/kuberpc/security"
)

// Option configures Dial.
type Option interface {
	apply(*options)
}

type options struct {
	balancer         string
	balancerConfig   string
	idempotent       []string
	retry            RetryPolicy
	defaultDeadline  time.Duration
	creds            credentials.TransportCredentials
	registerer       prometheus.Registerer
	noMetrics        bool
	tracer           trace.TracerProvider
	dialOptions      []grpc.DialOption
	pickMetrics      bool
	hedged           []string
	hedging          HedgingPolicy
	hedgingGiven     bool
	timeouts         []methodTimeout
	unary            []grpc.UnaryClientInterceptor
	stream           []grpc.StreamClientInterceptor
	outlier          *OutlierDetection
	connsPerEndpoint int
	refusalRetries   int
	tls              *security.TLSConfig
	tokenFile        string
}

type methodTimeout struct {
	timeout time.Duration
	names   []string
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithBalancer selects the load-balancing policy by its registered name
// ("round_robin", "weighted_round_robin", "pick_first", or a kuberpc
// balancer such as "p2c_ewma" once its package is imported), with its JSON
// configuration (empty for none). Default: round_robin.
//
// Which to choose (bench/results.md, "slow replica"): when replicas are
// alike, any: in the run at f6debd3 p99 ÷ round robin's was 1.04×
// (p2c_ewma), 1.01× (least_request) and 0.98× (weighted_round_robin),
// the round robin A/A's 0.98×. least_request settles ties of load by
// recency since f6debd3; grpc-go's policy, which settles them at random,
// had 1.11× and 1.19× in the two runs before. When replicas differ (one
// slow node, a noisy neighbour), p2c_ewma keeps p99 near the ideal (1.37×
// there) and sends the slow replica less than its share of the capacity;
// weighted_round_robin sends it about its share of the capacity (so its
// slower calls still show in the tail: 6.9×), least_request about twice
// that (10.5×).
//
// Streams (watches, subscriptions) held open do not skew how unary calls
// are balanced: Dial tells kuberpc's policies which calls are streams.
// least_request counts them apart (a unary call goes to the fewest unary
// calls in flight, a stream to the fewest streams open), and p2c_ewma
// learns nothing from them (a stream's length is not a round trip).
//
// weighted_round_robin weighs replicas by the ORCA load reports in their
// responses, which kuberpc's server sends only with ORCA_PER_CALL=true
// (kuberpc.yaml: env: {ORCA_PER_CALL: "true"}); without them every
// replica weighs the same and the policy is round robin. Out-of-band
// reports ({"enableOobLoadReport":true}) come at most every 30 s from
// grpc-go's ORCA service.
func WithBalancer(name, jsonConfig string) Option {
	return optionFunc(func(o *options) { o.balancer, o.balancerConfig = name, jsonConfig })
}

// WithRefusalRetries sets how many times a unary call that a kuberpc
// server refused without processing it (it was shedding load, or at its
// handler cap) is retried, whatever the method: such a call had no
// effect. Each retry is picked again by the balancer, after the delay
// the refusal suggests (a few milliseconds), within the call's deadline,
// and only while few calls are being refused (gRPC's retry throttling:
// when every replica sheds, retries stop). Default
// DefaultRefusalRetries; 0 turns it off.
func WithRefusalRetries(n int) Option {
	return optionFunc(func(o *options) { o.refusalRetries = n })
}

// WithIdempotentMethods names methods that are safe to retry, as
// "pkg.Service/Method", or "pkg.Service" for all of a service's methods, in
// addition to those whose proto declares an idempotency level.
func WithIdempotentMethods(names ...string) Option {
	return optionFunc(func(o *options) { o.idempotent = append(o.idempotent, names...) })
}

// WithRetryPolicy replaces the retry policy applied to idempotent methods.
// A MaxAttempts of 1 turns retries off; above 1 every field must be set
// (start from DefaultRetryPolicy), or Dial fails naming the one that is
// not.
func WithRetryPolicy(p RetryPolicy) Option {
	return optionFunc(func(o *options) { o.retry = p })
}

// WithDefaultDeadline sets the deadline given to unary RPCs whose context
// has none. Default 10s; 0 turns it off.
//
// The default deadline is a safety net against a call that would hang,
// and is kept cheaper than a deadline the caller sets: calls that end in
// the same 100ms share one timer, so a call's net ends between d and
// d+100ms after it starts; it fails with DEADLINE_EXCEEDED on the client,
// and the server sees the call cancelled then (its stream reset), but the
// call carries no grpc-timeout, so the handler's context has no deadline
// and the server keeps no timer for it. Set a deadline on the context
// where the server should know it.
func WithDefaultDeadline(d time.Duration) Option {
	return optionFunc(func(o *options) { o.defaultDeadline = d })
}

// WithTransportCredentials sets the transport security. Default: plaintext
// (insecure), as inside a cluster network without a mesh.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return optionFunc(func(o *options) { o.creds = c })
}

// WithTLS secures the connection with TLS from the files in c.Dir (see
// security.TLSConfig): the server is verified against ca.crt and, when
// c.ServerIdentity is set, must be that workload; with c.MutualTLS the
// client presents tls.crt. The files are re-read every c.Refresh, so
// rotated certificates are used by the next connection. It replaces
// WithTransportCredentials.
func WithTLS(c security.TLSConfig) Option {
	return optionFunc(func(o *options) { o.tls = &c })
}

// WithTokenFile attaches the JWT in path, a projected ServiceAccount
// token, to every call as "authorization: Bearer <token>", re-reading
// the file before the token expires (grpc-go's A97 token-file
// credentials). Tokens are sent only over TLS: use it with WithTLS or
// WithTransportCredentials.
func WithTokenFile(path string) Option {
	return optionFunc(func(o *options) { o.tokenFile = path })
}

// WithRegistry sets where client metrics are registered. Default:
// prometheus.DefaultRegisterer.
func WithRegistry(r prometheus.Registerer) Option {
	return optionFunc(func(o *options) { o.registerer = r })
}

// WithoutMetrics turns client metrics off.
func WithoutMetrics() Option {
	return optionFunc(func(o *options) { o.noMetrics = true })
}

// WithTracerProvider turns OpenTelemetry tracing on with tp.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tracer = tp })
}

// WithFastPath turns on kuberpc's fast path on the client, as
// server.WithFastPath does on the server: vtprotobuf's marshalling from
// 1 KiB up into pooled buffers (package codec), and two connections per
// endpoint (WithConnectionsPerEndpoint(2); a later
// WithConnectionsPerEndpoint wins). It is wire-compatible with any gRPC
// server. A codec chosen by the client is named in each call's
// content-type ("application/grpc+proto"), which costs grpc-go three
// allocations a call, whatever the message's size: a client whose
// requests are all small gains nothing from the codec (the replies are
// the server's, marshalled by server.WithFastPath). The second
// connection takes calls only once the first has 16 in flight, so a
// client with fewer calls per endpoint pays nothing for it but the
// connection a replica holds.
func WithFastPath() Option {
	return optionFunc(func(o *options) {
		o.dialOptions = append(o.dialOptions, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.New())))
		o.connsPerEndpoint = 2
	})
}

// WithDialOptions adds grpc.DialOptions, applied after kuberpc's so that
// they win.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(o *options) { o.dialOptions = append(o.dialOptions, opts...) })
}

// WithHedging sends the named methods ("pkg.Service/Method" or
// "pkg.Service") as hedged requests: after p.Delay without an answer,
// another copy goes to another endpoint (with kuberpc's policies, one
// the call has not tried), up to p.MaxAttempts, and the
// first answer wins. Hedge only methods that are safe to run more than
// once, and where tail latency matters more than the extra load. A hedged
// method is not also retried.
func WithHedging(p HedgingPolicy, names ...string) Option {
	return optionFunc(func(o *options) { o.hedged, o.hedging, o.hedgingGiven = append(o.hedged, names...), p, true })
}

// WithPickMetrics counts RPCs per endpoint in kuberpc_client_picks_total,
// whichever balancer picked them. It is off by default because it costs:
// once any stats handler is installed, grpc-go allocates an event per RPC
// phase (about 15 allocations per unary call, measured in bench/).
func WithPickMetrics() Option {
	return optionFunc(func(o *options) { o.pickMetrics = true })
}

// WithMethodTimeout gives the named methods ("pkg.Service/Method", or
// "pkg.Service" for all of a service's methods) a deadline of d through
// the service config: gRPC applies the shorter of d and the caller's own
// deadline. A method's own timeout wins over its service's.
func WithMethodTimeout(d time.Duration, names ...string) Option {
	return optionFunc(func(o *options) { o.timeouts = append(o.timeouts, methodTimeout{d, names}) })
}

// WithUnaryInterceptor adds unary interceptors that run inside kuberpc's
// (after its default deadline, hedging and metrics), in the order given.
func WithUnaryInterceptor(i ...grpc.UnaryClientInterceptor) Option {
	return optionFunc(func(o *options) { o.unary = append(o.unary, i...) })
}

// WithStreamInterceptor adds stream interceptors that run inside
// kuberpc's, in the order given.
func WithStreamInterceptor(i ...grpc.StreamClientInterceptor) Option {
	return optionFunc(func(o *options) { o.stream = append(o.stream, i...) })
}

// OutlierDetection ejects endpoints whose calls fail (UNAVAILABLE,
// INTERNAL, UNKNOWN, DATA_LOSS, RESOURCE_EXHAUSTED) from the balancer's
// picks for a while, under every balancer; see package
// balancer/outlierdetection for the algorithm.
type OutlierDetection struct {
	// ConsecutiveFailures ejects an endpoint whose last this many calls
	// failed; 0 turns it off.
	ConsecutiveFailures int
	// FailurePercentage ejects, every Interval, endpoints with at least
	// RequestVolume calls whose failure percentage is at least Threshold,
	// when at least MinimumHosts endpoints had that many calls; a zero
	// Threshold turns it off.
	FailurePercentageThreshold, MinimumHosts, RequestVolume int
	// Interval is how often ejections are evaluated and lifted.
	Interval time.Duration
	// BaseEjectionTime × the times an endpoint was ejected (at most
	// MaxEjectionTime) is how long it stays out.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent bounds the share of endpoints ejected at once.
	MaxEjectionPercent int
}

// DefaultOutlierDetection is what Dial uses unless WithOutlierDetection
// or WithoutOutlierDetection says otherwise.
var DefaultOutlierDetection = OutlierDetection{
	ConsecutiveFailures: 5, FailurePercentageThreshold: 50, MinimumHosts: 3, RequestVolume: 20,
	Interval: time.Second, BaseEjectionTime: 5 * time.Second, MaxEjectionTime: time.Minute, MaxEjectionPercent: 50,
}

// WithConnectionsPerEndpoint gives every endpoint n connections instead
// of one (1-16; package balancer/connections): the balancer still
// chooses the endpoint, and a call goes on its first connection while
// that has fewer than 16 calls in flight, else on the one with the
// fewest. It is for a client that keeps many calls in flight on each of
// few replicas, where one connection's reading and writing goroutines
// set the pace (bench/results.md, the fast path: 64 calls in flight to
// one replica); below 16 calls per endpoint it changes nothing but the
// connections each replica holds from this client, against its
// MAX_CONNECTIONS. WithFastPath sets 2. With WithBalancer naming
// kuberpc_connections as well, Dial fails: the two would multiply.
func WithConnectionsPerEndpoint(n int) Option {
	return optionFunc(func(o *options) { o.connsPerEndpoint = n })
}

// WithOutlierDetection replaces the outlier detection settings.
func WithOutlierDetection(od OutlierDetection) Option {
	return optionFunc(func(o *options) { o.outlier = &od })
}

// WithoutOutlierDetection turns outlier detection off: the balancer's
// picks are used as they are.
func WithoutOutlierDetection() Option {
	return optionFunc(func(o *options) { o.outlier = nil })
}
