package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Config is the declarative configuration of a Server. A Config is taken
// as it is: a zero field means zero (each field says what zero does), not
// "the default". Start from DefaultConfig, or LoadConfig, and change what
// you need; a Config literal with fields left out gets zeros for them.
type Config struct {
	// Port is the gRPC port (env PORT, flag --port). Default 50051; 0
	// picks a free port (see Server.Addr).
	Port int
	// MetricsPort is the HTTP port serving /metrics, /healthz and /readyz
	// (env METRICS_PORT, flag --metrics-port). Default 9090; 0 picks a free
	// port; -1 disables it.
	MetricsPort int
	// PodName, PodNamespace and PodIP identify the pod (env POD_NAME,
	// POD_NAMESPACE, POD_IP, set through the downward API). They label logs
	// and traces; empty outside Kubernetes.
	PodName, PodNamespace, PodIP string
	// MemoryLimit is the memory the container may use, in bytes (env
	// MEMORY_LIMIT, bytes or a Kubernetes quantity such as 256Mi;
	// kuberpc's manifests set it from the container's limits.memory
	// through the downward API). When it is set and the environment has
	// no GOMEMLIMIT, New sets the Go runtime's soft memory limit to
	// MemoryLimitShare of it, so that the garbage collector works harder
	// as the heap nears the limit instead of letting the kernel kill the
	// container; the rest is left for what the runtime does not count.
	// A GOMEMLIMIT in the environment wins. Zero means no limit is known
	// and the runtime's is left alone; below 4 MiB, which no Go server
	// fits in, it is refused (most likely a quantity without its unit).
	MemoryLimit int64

	// Drain controls graceful shutdown.
	Drain Drain
	// Keepalive controls connection keepalive and maximum age.
	Keepalive Keepalive
	// Limits bounds what one client can make the server do.
	Limits Limits
	// Transport tunes HTTP/2 flow control and stream scheduling.
	Transport Transport

	// LogLevel is the minimum level of the default logger (env LOG_LEVEL).
	// Nil means info. It is ignored when WithLogger supplies the logger.
	LogLevel slog.Leveler
	// RPCLogLevel is the level of the one line logged per RPC (env
	// RPC_LOG_LEVEL). Nil means debug, so RPC lines are off at the default
	// LogLevel. Failed RPCs with server-side codes (Internal, Unknown,
	// DataLoss) are always logged at warn.
	RPCLogLevel slog.Leveler
	// OTLPEndpoint, when set, turns tracing on and exports spans over
	// OTLP/gRPC to this URL, http:// (plaintext) or https:// (TLS), or
	// host:port (plaintext) (env OTEL_EXPORTER_OTLP_ENDPOINT, or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). The exporter reads the other
	// standard OTEL_EXPORTER_OTLP_* variables (headers, certificates,
	// timeout, compression) itself.
	OTLPEndpoint string
	// ServiceName is the service.name of the traces (env OTEL_SERVICE_NAME;
	// kuberpc's manifests set it to the app's name). Empty means the
	// program's name.
	ServiceName string
	// ORCAPerCall adds per-call ORCA load reports to every response's
	// trailers (env ORCA_PER_CALL). Out-of-band reports are always served.
	ORCAPerCall bool
	// Security is transport security, caller identity and authorization.
	// All off by default.
	Security Security
}

// Security configures TLS, authentication and authorization (see package
// security). With MutualTLS, AUTH_AUDIENCE or AUTHZ_POLICY set, every call
// must carry an identity (health checks excepted) or fails with
// UNAUTHENTICATED; with AUTHZ_POLICY, a call its rules do not allow fails
// with PERMISSION_DENIED.
type Security struct {
	// TLSDir holds the server's tls.crt and tls.key, and ca.crt for mTLS
	// (env TLS_DIR); the files are re-read every TLSRefresh, so
	// certificates rotate without a restart. Empty means plaintext.
	TLSDir string
	// MutualTLS requires clients to present a certificate signed by
	// ca.crt, whose spiffe:// URI SAN is then the caller's identity (env
	// TLS_CLIENT_AUTH=require; none is the default).
	MutualTLS bool
	// TLSRefresh is how often the TLS files are re-read (env TLS_REFRESH).
	// Default 10s; it must be positive.
	TLSRefresh time.Duration
	// Audience turns token authentication on: callers may present a
	// projected ServiceAccount token for this audience, which the server
	// checks with the TokenReview API (env AUTH_AUDIENCE). It needs
	// TLSDir: tokens are accepted only over TLS.
	Audience string
	// TrustDomain is the SPIFFE trust domain of identities from tokens
	// (env TRUST_DOMAIN). Default cluster.local.
	TrustDomain string
	// TokenTTL is how long a reviewed token is trusted before the API
	// server is asked again, and never past its expiry (env
	// TOKEN_CACHE_TTL). Default 10s; 0 asks on every call.
	TokenTTL time.Duration
	// PolicyFile is an authorization policy, YAML or JSON (env
	// AUTHZ_POLICY; see security.Policy): a call is allowed only when a
	// rule names its method and its caller. Empty means any
	// authenticated caller may call any method. A policy needs MutualTLS
	// or Audience, which identify callers: without either New refuses
	// it, as every call but health checks would fail UNAUTHENTICATED.
	PolicyFile string
	// Policy is the authorization policy itself, YAML or JSON, for
	// deployments that pass it in the environment rather than a file
	// (env AUTHZ_POLICY_INLINE; kuberpc's manifests set it from
	// kuberpc.yaml's security.rules). At most one of PolicyFile and
	// Policy may be set.
	Policy string
}

// Drain is the graceful-shutdown policy. The same struct drives the
// Kubernetes manifests: TerminationGracePeriod is what the pod must be given.
type Drain struct {
	// PropagationDelay is how long the server keeps serving after it reports
	// NOT_SERVING, so that the EndpointSlice update reaches every client
	// before connections are closed (env DRAIN_DELAY). Default 5s; 0 stops
	// at once.
	PropagationDelay time.Duration
	// Timeout bounds GracefulStop: in-flight RPCs and streams still running
	// this long after it started are cancelled (env DRAIN_TIMEOUT).
	// Default 20s; 0 cancels them at once.
	Timeout time.Duration
}

// TerminationGracePeriod is the terminationGracePeriodSeconds a pod running
// this server needs: the propagation delay, the drain timeout and 5s for
// the process to exit.
func (d Drain) TerminationGracePeriod() time.Duration {
	return d.PropagationDelay + d.Timeout + 5*time.Second
}

// Keepalive is the server's keepalive and connection-age policy.
type Keepalive struct {
	// Time is how long a connection may be idle before the server pings it
	// (env KEEPALIVE_TIME). Default 1m; 0 turns server pings off; at
	// least 1s otherwise, grpc-go's floor.
	Time time.Duration
	// Timeout is how long the server waits for a ping ack before closing the
	// connection (env KEEPALIVE_TIMEOUT). Default 20s; it must be positive
	// when Time is.
	Timeout time.Duration
	// MinClientTime is the shortest client ping interval the server accepts;
	// clients pinging more often get GOAWAY (env KEEPALIVE_MIN_TIME).
	// Default 10s; 0 accepts pings at any rate.
	MinClientTime time.Duration
	// MaxConnectionAge is how long a connection lives before the server sends
	// GOAWAY so that the client reconnects, and rebalances (env
	// MAX_CONNECTION_AGE). grpc-go adds ±10% jitter. Default 2m; 0 means
	// connections have no maximum age.
	MaxConnectionAge time.Duration
	// MaxConnectionAgeGrace is how long RPCs may run on a connection past
	// its age before it is closed (env MAX_CONNECTION_AGE_GRACE). Default
	// Forever, so long streams are not cut by rebalancing ("forever" in the
	// environment); 0 closes the connection at its age.
	MaxConnectionAgeGrace time.Duration
}

// Transport tunes grpc-go's HTTP/2 transport for in-cluster traffic.
type Transport struct {
	// StreamWindow and ConnWindow are the HTTP/2 flow-control windows the
	// server grants a client per stream and per connection, in bytes (env
	// STREAM_WINDOW, CONN_WINDOW): how much a client may send before the
	// server has read it, so ConnWindow also bounds what one connection
	// can make the server buffer. Static windows turn off grpc-go's
	// bandwidth-delay estimation, whose pings and window updates cost a
	// dozen allocations per small call and which lets windows grow to
	// 16 MiB. Defaults 1 MiB and 4 MiB, ample for a cluster network (10
	// Gb/s × 1 ms round trip is 1.25 MB); StreamWindow must be at least
	// 64 KiB (HTTP/2's default) and ConnWindow at least StreamWindow.
	// DynamicWindows (env DYNAMIC_WINDOWS) gives grpc-go's estimation
	// back instead, for links with a large bandwidth-delay product.
	// A benchmark that runs its client in the server's process sees the
	// static windows cost QPS with one small call in flight (0.87-0.97
	// of grpc-go's defaults at 1 KiB, CPU per call 1.16-1.26): one Go
	// runtime sleeps and wakes its threads more often without the
	// estimation's pings. With the client in a process of its own, as in
	// a deployment, the same windows ran at 1.04 and 1.03 (package
	// bench's doc).
	StreamWindow, ConnWindow int32
	DynamicWindows           bool
	// StreamWorkers is how many goroutines serve streams, reused from one
	// stream to the next so that each call does not grow a new stack
	// (env STREAM_WORKERS); when all are busy a stream gets a goroutine
	// of its own, as it does with 0. Default 16 per GOMAXPROCS, at least
	// 64: enough that the calls a busy replica serves at once each find
	// one (an idle worker costs its stack, a few KiB). Fewer trade CPU
	// per call for a shorter tail when the cores are saturated; see
	// defaultStreamWorkers.
	StreamWorkers int
}

// defaultStreamWorkers is Transport.StreamWorkers' default. A call that
// finds no idle worker runs on a new goroutine, whose stack grows again
// on the way down to its handler: with 64 unary calls in flight on 2
// cores and GOMAXPROCS workers, a CPU profile of the server and client
// in one process put 9% of it in stack growth, and 64 workers ran the
// calls on 9% less CPU than 2.
//
// The workers widen the latency distribution when the cores are
// saturated: its median falls and its tail grows. With 64 unary calls in
// flight on 2 cores (bench probe, 24 rounds of 1 s, ÷ raw grpc-go's
// defaults), kuberpc's p99 with 8, 16, 32 and 64 workers was 1.11, 1.15,
// 1.33 and 1.46 at 1 B and 1.07, 1.10, 1.14 and 1.28 at 1 KiB, for QPS
// of 0.94, 0.96, 0.95 and 0.96 at 1 B and 0.94, 0.96, 0.98 and 1.00 at
// 1 KiB (raw grpc-go's own p99 with 64 workers: 1.10-1.18). It is not
// the probe's small heap (over 100 GC cycles a second): with 64 MiB
// more of live heap, p99 was 1.20 with 16 workers and 1.46 with 64. A
// whole make bench run with 16 workers confirmed both sides of it: p99
// at 64 calls 1.17 (1 B) and 1.13 (1 KiB), against 1.32 and 1.20 with
// 64, and QPS 0.97 and 0.95 against 0.98 and 1.02, CPU per call 1.01
// and 1.05 against 1.00 and 0.97. The default keeps the CPU: it is
// saved whenever more than 16 calls are in flight, which on a service
// whose handlers wait on other services is most of the time, while the
// tail grows only once the cores are saturated. A replica that serves
// CPU-bound calls at full load can set fewer.
//
// kuberpc's own work per call is not what keeps a goroutine per stream
// from being the default: with 0 workers and, on top, every optional
// per-call feature off on both sides (the client's outlier detection,
// refusal retries, default deadline, retry policy and metrics; the
// server's adaptive shedding and stalled-write accounting), QPS at 64
// calls in flight was 0.95 and 0.96 of raw grpc-go's and p99 1.01 and
// 1.07, against 0.92 and 0.94, p99 1.06 and 1.05, with them on (bench
// probe on another machine, 2 AMD vCPUs, two runs of 8 rounds, 1 B;
// A/A 1.00 and 0.97). Each feature alone moved QPS by 0-2.5 %, the
// default deadline most, within the noise.
func defaultStreamWorkers() int { return max(64, 16*runtime.GOMAXPROCS(0)) }

// minMemoryLimit is the least Config.MemoryLimit accepted, 4 MiB: a Go
// gRPC server's runtime alone takes more.
const minMemoryLimit = 4 << 20

// minWindow is HTTP/2's initial window, the least grpc-go accepts.
const minWindow = 64 << 10

// Limits bounds what clients can make the server do.
type Limits struct {
	// MaxRecvMsgSize is the largest message the server accepts, in bytes;
	// larger ones fail with RESOURCE_EXHAUSTED (env MAX_RECV_MSG_SIZE).
	// Default 4 MiB; 0 accepts only empty messages.
	MaxRecvMsgSize int
	// MaxSendMsgSize is the largest message the server sends, in bytes (env
	// MAX_SEND_MSG_SIZE). Default 4 MiB; 0 sends only empty messages.
	MaxSendMsgSize int
	// MaxConcurrentStreams is the HTTP/2 stream limit per connection (env
	// MAX_CONCURRENT_STREAMS). Default 1000; it must be at least 1.
	MaxConcurrentStreams uint32
	// MaxConnections caps the client connections the gRPC port holds at
	// once (env MAX_CONNECTIONS). A connection beyond it is closed as
	// soon as it is accepted, before any byte is read, so its client
	// reconnects (to another replica, if it balances). Every connection
	// costs memory, calls or none (about 25 KiB idle), so without a cap a
	// client that opens connections without end fills the pod's memory.
	// Default 4096; it must be at least 1. The metrics port's connections
	// are not counted.
	MaxConnections int
	// MaxInFlight sheds load: RPCs beyond this many in flight fail at once
	// with UNAVAILABLE (env MAX_IN_FLIGHT). An RPC is in flight from the
	// moment its stream is admitted, before its handler runs, so calls
	// waiting for a CPU count too. Default 0, no limit. Health,
	// reflection and ORCA calls are neither counted nor shed.
	MaxInFlight int
	// AdaptiveShedding sheds load with an adaptive concurrency limit (env
	// ADAPTIVE_SHEDDING): every 100ms the limit is cut when the mean
	// latency of unary calls, measured from admission, is over twice its
	// recent minimum and over it by at least 1ms (deeper the further
	// over, down to half) while the queue grows — the most calls in
	// flight passed the most of the previous second, calls were already
	// refused, or callers gave up on calls that had waited past that
	// threshold —, holds near that, and grows by √limit while the window
	// used half of it. The latencies learned are those of calls that
	// succeeded and of calls whose caller gave up (its deadline passed,
	// or it cancelled) before the handler returned, after waiting past
	// the threshold: when a dependency slows past every deadline nothing
	// succeeds, and the limit must still come down. A unary method that
	// waits by design (a long poll answered when something changes, or
	// at its deadline) reads as a queue to the limiter: serve it as a
	// server stream, or turn adaptive shedding off and bound the server
	// with MaxInFlight and MethodLimits. It starts at MaxHandlers, so a
	// server that is merely busy never sheds: callers in a closed loop (a
	// load test, a batch job with N workers) queue but never grow the
	// queue. It bottoms out at 2×GOMAXPROCS. It bounds unary calls:
	// a stream (client, server or bidi) is refused while the unary calls
	// in flight are at the limit, but once admitted holds no place under
	// it, so streams held open for hours (watches, subscriptions) never
	// take the places of unary calls; MaxHandlers, MaxInFlight and
	// MethodLimits count them. The limit is exported as
	// kuberpc_server_concurrency_limit and in ORCA load reports (named
	// metric concurrency_limit, beside in_flight, which counts every RPC
	// in flight, streams included: the two meet only where every call
	// is unary). Default on.
	//
	// Calls refused by MaxInFlight, AdaptiveShedding or MaxHandlers are
	// refused before grpc-go starts a handler (InTapHandle), with a
	// google.rpc.ErrorInfo detail marking them as not processed, which
	// kuberpc clients retry on another replica whatever the method (see
	// client.WithRefusalRetries). Health, reflection and ORCA calls are
	// neither counted nor shed.
	AdaptiveShedding bool
	// MaxHandlers caps the calls the server holds at once across every
	// connection: queued, waiting for their request, running, or running
	// on after the client reset them; a stream beyond it is refused before
	// a handler starts,
	// with RESOURCE_EXHAUSTED (env MAX_HANDLERS). With MaxRecvMsgSize,
	// MaxSendMsgSize and MaxHeaderListSize it bounds the memory that calls
	// in progress make the server hold; a unary reply its client has not
	// read is outside it (see StalledWriteTimeout). Health, reflection
	// and ORCA calls are neither counted nor refused. Default 2000; it
	// must be at least 1.
	MaxHandlers int
	// StalledWriteTimeout is how long a client may leave its replies
	// unread before the server closes its connection (env
	// STALLED_WRITE_TIMEOUT): a client that grants no flow-control window
	// would otherwise keep them in the server's memory for as long as it
	// likes. Default 30s; Forever ("forever") turns it off; it must be
	// positive.
	//
	// For streams it is how long a handler's SendMsg may stay blocked
	// (grpc-go blocks it once the stream's 64 KiB write quota is used);
	// it is checked every quarter of the timeout, so the connection is
	// closed between the timeout and a quarter more into the block.
	// A unary reply is queued in grpc-go after its handler has returned,
	// and grpc-go says nothing when it has been written, so the server
	// counts, per connection, the bytes of unary replies queued against
	// the bytes written: once 256 KiB are outstanding, a connection that
	// does not write as many in the next StalledWriteTimeout is closed.
	// While it is on, unary replies are sent uncompressed, even to
	// compressed calls (whose requests are read as always): a compressed
	// reply's size is unknown until grpc-go has queued it, so it could
	// not be counted, and a client sending compressed calls could keep
	// one unread reply per stream, up to MaxConcurrentStreams per
	// connection. Off, grpc-go answers a compressed call in its encoding.
	StalledWriteTimeout time.Duration
	// MaxHeaderListSize bounds the header block a client may send per
	// stream, in bytes (env MAX_HEADER_LIST_SIZE). Default 64 KiB; it must
	// be at least 1 KiB.
	MaxHeaderListSize uint32
	// DefaultDeadline is applied to unary RPCs that arrive without one (env
	// DEFAULT_DEADLINE). Default 0, none.
	DefaultDeadline time.Duration
	// MethodLimits caps the calls of one method held at once, counted as
	// MaxHandlers counts them, keyed by full method name
	// ("/pkg.Service/Method"): a costly method cannot take every slot
	// from the cheap ones. Calls beyond a method's limit are refused
	// before a handler starts with RESOURCE_EXHAUSTED, marked as not
	// processed (env METHOD_LIMITS, "pkg.Service/Method=N,..."). A limit
	// of 0 refuses every call of the method. Serve fails when a name is
	// not a method of a registered service. Default none.
	MethodLimits map[string]int
}

// Forever is a duration that never ends, for MaxConnectionAgeGrace and
// StalledWriteTimeout.
const Forever = time.Duration(math.MaxInt64)

// DefaultConfig returns the configuration New uses without WithConfig,
// and that LoadConfig starts from.
func DefaultConfig() Config {
	return Config{
		Port:        50051,
		MetricsPort: 9090,
		Drain:       Drain{PropagationDelay: 5 * time.Second, Timeout: 20 * time.Second},
		Keepalive: Keepalive{
			Time:                  time.Minute,
			Timeout:               20 * time.Second,
			MinClientTime:         10 * time.Second,
			MaxConnectionAge:      2 * time.Minute,
			MaxConnectionAgeGrace: Forever,
		},
		Limits: Limits{
			MaxRecvMsgSize:       4 << 20,
			MaxSendMsgSize:       4 << 20,
			MaxConcurrentStreams: 1000,
			MaxConnections:       4096,
			MaxHandlers:          2000,
			MaxHeaderListSize:    64 << 10,
			AdaptiveShedding:     true,
			StalledWriteTimeout:  30 * time.Second,
		},
		Transport:   Transport{StreamWindow: 1 << 20, ConnWindow: 4 << 20, StreamWorkers: defaultStreamWorkers()},
		Security:    Security{TLSRefresh: 10 * time.Second, TrustDomain: "cluster.local", TokenTTL: 10 * time.Second},
		LogLevel:    slog.LevelInfo,
		RPCLogLevel: slog.LevelDebug,
	}
}

// Validate reports every invalid setting of c, each error naming the
// setting by its environment variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(name string, v any, why string) {
		errs = append(errs, fmt.Errorf("invalid %s %v: %s", name, v, why))
	}
	if c.Port < 0 || c.Port > 65535 {
		bad("PORT", c.Port, "must be a port number in 1-65535, or 0 for a free port")
	}
	if c.MetricsPort < -1 || c.MetricsPort > 65535 {
		bad("METRICS_PORT", c.MetricsPort, "must be a port number in 1-65535, 0 for a free port, or -1 to disable")
	}
	if c.MetricsPort == c.Port && c.Port != 0 {
		bad("METRICS_PORT", c.MetricsPort, "must differ from PORT")
	}
	if c.Limits.MaxConcurrentStreams == 0 {
		bad("MAX_CONCURRENT_STREAMS", 0, "must be at least 1")
	}
	if c.Limits.MaxConnections < 1 {
		bad("MAX_CONNECTIONS", c.Limits.MaxConnections, "must be at least 1")
	}
	if c.Limits.MaxHandlers < 1 {
		bad("MAX_HANDLERS", c.Limits.MaxHandlers, "must be at least 1")
	}
	if c.Limits.StalledWriteTimeout <= 0 {
		bad("STALLED_WRITE_TIMEOUT", c.Limits.StalledWriteTimeout, "must be positive (forever turns it off)")
	}
	if c.Limits.MaxHeaderListSize < 1024 {
		bad("MAX_HEADER_LIST_SIZE", c.Limits.MaxHeaderListSize, "must be at least 1024 bytes")
	}
	if !c.Transport.DynamicWindows {
		if c.Transport.StreamWindow < minWindow {
			bad("STREAM_WINDOW", c.Transport.StreamWindow, "must be at least 65536 bytes (HTTP/2's initial window)")
		}
		if c.Transport.ConnWindow < c.Transport.StreamWindow {
			bad("CONN_WINDOW", c.Transport.ConnWindow, "must be at least STREAM_WINDOW")
		}
	}
	if c.Transport.StreamWorkers < 0 || c.Transport.StreamWorkers > 1<<16 {
		bad("STREAM_WORKERS", c.Transport.StreamWorkers, "must be 0 (a goroutine per stream) to 65536")
	}
	if c.Keepalive.Time > 0 && c.Keepalive.Timeout <= 0 {
		bad("KEEPALIVE_TIMEOUT", c.Keepalive.Timeout, "must be positive when KEEPALIVE_TIME is set")
	}
	if c.MemoryLimit < 0 {
		bad("MEMORY_LIMIT", c.MemoryLimit, "must not be negative")
	}
	if c.MemoryLimit > 0 && c.MemoryLimit < minMemoryLimit {
		bad("MEMORY_LIMIT", c.MemoryLimit, "must be at least 4Mi, in bytes: less holds no Go server (a quantity takes its unit: 256Mi, not 256)")
	}
	if c.Keepalive.Time > 0 && c.Keepalive.Time < time.Second {
		bad("KEEPALIVE_TIME", c.Keepalive.Time, "must be at least 1s, which grpc-go would raise it to (0 for no pings)")
	}
	if c.PodIP != "" && net.ParseIP(c.PodIP) == nil {
		bad("POD_IP", strconv.Quote(c.PodIP), "not an IP address")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DRAIN_DELAY", c.Drain.PropagationDelay},
		{"DRAIN_TIMEOUT", c.Drain.Timeout},
		{"KEEPALIVE_TIME", c.Keepalive.Time},
		{"KEEPALIVE_TIMEOUT", c.Keepalive.Timeout},
		{"KEEPALIVE_MIN_TIME", c.Keepalive.MinClientTime},
		{"MAX_CONNECTION_AGE", c.Keepalive.MaxConnectionAge},
		{"MAX_CONNECTION_AGE_GRACE", c.Keepalive.MaxConnectionAgeGrace},
		{"DEFAULT_DEADLINE", c.Limits.DefaultDeadline},
	} {
		if d.v < 0 {
			bad(d.name, d.v, "must not be negative")
		}
	}
	if c.Limits.MaxRecvMsgSize < 0 {
		bad("MAX_RECV_MSG_SIZE", c.Limits.MaxRecvMsgSize, "must not be negative")
	}
	if c.Limits.MaxSendMsgSize < 0 {
		bad("MAX_SEND_MSG_SIZE", c.Limits.MaxSendMsgSize, "must not be negative")
	}
	if c.Limits.MaxInFlight < 0 {
		bad("MAX_IN_FLIGHT", c.Limits.MaxInFlight, "must not be negative")
	}
	for _, m := range slices.Sorted(maps.Keys(c.Limits.MethodLimits)) {
		if n := c.Limits.MethodLimits[m]; n < 0 {
			bad("METHOD_LIMITS", fmt.Sprintf("%s=%d", m, n), "a limit must not be negative")
		}
		if !validMethodName(m) {
			bad("METHOD_LIMITS", strconv.Quote(m), `a method must be a full name such as /pkg.Service/Method`)
		}
	}
	if c.Security.MutualTLS && c.Security.TLSDir == "" {
		bad("TLS_CLIENT_AUTH", "require", "needs TLS_DIR (the server's certificate and the CA that signs clients)")
	}
	if c.Security.Audience != "" && c.Security.TLSDir == "" {
		bad("AUTH_AUDIENCE", strconv.Quote(c.Security.Audience), "needs TLS_DIR: tokens are accepted only over TLS")
	}
	if c.Security.PolicyFile != "" && c.Security.Policy != "" {
		bad("AUTHZ_POLICY_INLINE", "(set)", "AUTHZ_POLICY is set too; give the policy once")
	}
	if c.Security.TLSRefresh <= 0 {
		bad("TLS_REFRESH", c.Security.TLSRefresh, "must be positive")
	}
	if c.Security.TokenTTL < 0 {
		bad("TOKEN_CACHE_TTL", c.Security.TokenTTL, "must not be negative")
	}
	if c.Security.TrustDomain == "" || strings.ContainsAny(c.Security.TrustDomain, "/:@ ") {
		bad("TRUST_DOMAIN", strconv.Quote(c.Security.TrustDomain), "must be a trust domain name such as cluster.local")
	}
	if c.OTLPEndpoint != "" {
		u, err := url.Parse(otlpURL(c.OTLPEndpoint))
		if err != nil || u.Host == "" {
			bad("OTEL_EXPORTER_OTLP_ENDPOINT", strconv.Quote(c.OTLPEndpoint), "must be a URL such as http://collector:4317 (or host:port)")
		}
	}
	return errors.Join(errs...)
}

// validMethodName reports whether m has the form of a full gRPC method
// name, /service/method, with a non-empty service and method.
func validMethodName(m string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
	return strings.HasPrefix(m, "/") && ok && svc != "" && method != "" && !strings.Contains(method, "/")
}

// setting is one configuration field, reachable as a flag and an
// environment variable.
type setting struct {
	env, flag, usage string
	set              func(c *Config, v string) error
}

func settings() []setting {
	return []setting{
		{"PORT", "port", "gRPC port (0: a free port)", intField(func(c *Config) *int { return &c.Port })},
		{"METRICS_PORT", "metrics-port", "HTTP port for /metrics, /healthz, /readyz (0: a free port; -1 disables)", intField(func(c *Config) *int { return &c.MetricsPort })},
		{"POD_NAME", "pod-name", "pod name (downward API)", strField(func(c *Config) *string { return &c.PodName })},
		{"POD_NAMESPACE", "pod-namespace", "pod namespace (downward API)", strField(func(c *Config) *string { return &c.PodNamespace })},
		{"POD_IP", "pod-ip", "pod IP (downward API)", strField(func(c *Config) *string { return &c.PodIP })},
		{"MEMORY_LIMIT", "memory-limit", "the container's memory limit (downward API limits.memory); sets the Go runtime's to 90% of it unless GOMEMLIMIT is set", memoryField},
		{"DRAIN_DELAY", "drain-delay", "time to keep serving after NOT_SERVING before stopping (0: none)", durField(func(c *Config) *time.Duration { return &c.Drain.PropagationDelay })},
		{"DRAIN_TIMEOUT", "drain-timeout", "hard deadline for in-flight RPCs during drain (0: cancel them at once)", durField(func(c *Config) *time.Duration { return &c.Drain.Timeout })},
		{"KEEPALIVE_TIME", "keepalive-time", "idle time before the server pings a client (0: no pings)", durField(func(c *Config) *time.Duration { return &c.Keepalive.Time })},
		{"KEEPALIVE_TIMEOUT", "keepalive-timeout", "ping ack timeout", durField(func(c *Config) *time.Duration { return &c.Keepalive.Timeout })},
		{"KEEPALIVE_MIN_TIME", "keepalive-min-time", "shortest client ping interval accepted (0: any)", durField(func(c *Config) *time.Duration { return &c.Keepalive.MinClientTime })},
		{"MAX_CONNECTION_AGE", "max-connection-age", "connection age before GOAWAY (0: no maximum)", durField(func(c *Config) *time.Duration { return &c.Keepalive.MaxConnectionAge })},
		{"MAX_CONNECTION_AGE_GRACE", "max-connection-age-grace", "time RPCs may run past the connection age (forever, or a duration; 0: none)", func(c *Config, v string) error {
			if strings.TrimSpace(v) == "forever" {
				c.Keepalive.MaxConnectionAgeGrace = Forever
				return nil
			}
			return durField(func(c *Config) *time.Duration { return &c.Keepalive.MaxConnectionAgeGrace })(c, v)
		}},
		{"MAX_RECV_MSG_SIZE", "max-recv-msg-size", "largest accepted message, bytes", intField(func(c *Config) *int { return &c.Limits.MaxRecvMsgSize })},
		{"MAX_SEND_MSG_SIZE", "max-send-msg-size", "largest sent message, bytes", intField(func(c *Config) *int { return &c.Limits.MaxSendMsgSize })},
		{"MAX_CONCURRENT_STREAMS", "max-concurrent-streams", "HTTP/2 streams per connection", func(c *Config, v string) error {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return errors.New("must be a whole number")
			}
			c.Limits.MaxConcurrentStreams = uint32(n)
			return nil
		}},
		{"MAX_IN_FLIGHT", "max-in-flight", "RPCs in flight before shedding load (0: no limit)", intField(func(c *Config) *int { return &c.Limits.MaxInFlight })},
		{"ADAPTIVE_SHEDDING", "adaptive-shedding", "shed load with an adaptive concurrency limit that follows latency (default true)", func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			c.Limits.AdaptiveShedding = b
			return nil
		}},
		{"MAX_HANDLERS", "max-handlers", "handlers running at once across connections; more are refused", intField(func(c *Config) *int { return &c.Limits.MaxHandlers })},
		{"MAX_CONNECTIONS", "max-connections", "client connections held at once; more are closed when accepted", intField(func(c *Config) *int { return &c.Limits.MaxConnections })},
		{"MAX_HEADER_LIST_SIZE", "max-header-list-size", "largest header block per stream, bytes", func(c *Config, v string) error {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				return errors.New("must be a whole number")
			}
			c.Limits.MaxHeaderListSize = uint32(n)
			return nil
		}},
		{"STALLED_WRITE_TIMEOUT", "stalled-write-timeout", "how long a client may leave its replies unread (a stream's send blocked, or 256 KiB of unary replies outstanding) before its connection is closed (forever: never)", func(c *Config, v string) error {
			if strings.TrimSpace(v) == "forever" {
				c.Limits.StalledWriteTimeout = Forever
				return nil
			}
			return durField(func(c *Config) *time.Duration { return &c.Limits.StalledWriteTimeout })(c, v)
		}},
		{"STREAM_WINDOW", "stream-window", "HTTP/2 flow-control window per stream, bytes", windowField(func(c *Config) *int32 { return &c.Transport.StreamWindow })},
		{"CONN_WINDOW", "conn-window", "HTTP/2 flow-control window per connection, bytes", windowField(func(c *Config) *int32 { return &c.Transport.ConnWindow })},
		{"DYNAMIC_WINDOWS", "dynamic-windows", "let grpc-go size flow-control windows by bandwidth-delay estimation instead", func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			c.Transport.DynamicWindows = b
			return nil
		}},
		{"STREAM_WORKERS", "stream-workers", "goroutines reused to serve streams (0: one per stream)", intField(func(c *Config) *int { return &c.Transport.StreamWorkers })},
		{"DEFAULT_DEADLINE", "default-deadline", "deadline for unary RPCs that carry none (0: none)", durField(func(c *Config) *time.Duration { return &c.Limits.DefaultDeadline })},
		{"METHOD_LIMITS", "method-limits", "calls of a method held at once, as pkg.Service/Method=N,... (0 refuses the method)", func(c *Config, v string) error {
			limits := map[string]int{}
			for item := range strings.SplitSeq(v, ",") {
				item = strings.TrimSpace(item)
				if item == "" {
					continue
				}
				name, num, ok := strings.Cut(item, "=")
				n, err := strconv.Atoi(strings.TrimSpace(num))
				if !ok || err != nil {
					return fmt.Errorf("%q: must be pkg.Service/Method=N", item)
				}
				name = "/" + strings.TrimPrefix(strings.TrimSpace(name), "/")
				if _, dup := limits[name]; dup {
					return fmt.Errorf("%s is given twice", name)
				}
				limits[name] = n
			}
			c.Limits.MethodLimits = limits
			return nil
		}},
		{"TLS_DIR", "tls-dir", "directory with tls.crt, tls.key (and ca.crt for mTLS); serves TLS", strField(func(c *Config) *string { return &c.Security.TLSDir })},
		{"TLS_CLIENT_AUTH", "tls-client-auth", "none, or require: clients present a certificate signed by ca.crt (mTLS)", func(c *Config, v string) error {
			switch strings.TrimSpace(v) {
			case "none":
				c.Security.MutualTLS = false
			case "require":
				c.Security.MutualTLS = true
			default:
				return errors.New("must be none or require")
			}
			return nil
		}},
		{"TLS_REFRESH", "tls-refresh", "how often the TLS files are re-read", durField(func(c *Config) *time.Duration { return &c.Security.TLSRefresh })},
		{"AUTH_AUDIENCE", "auth-audience", "accept ServiceAccount tokens for this audience, reviewed with the TokenReview API", strField(func(c *Config) *string { return &c.Security.Audience })},
		{"TRUST_DOMAIN", "trust-domain", "SPIFFE trust domain of token identities", strField(func(c *Config) *string { return &c.Security.TrustDomain })},
		{"TOKEN_CACHE_TTL", "token-cache-ttl", "how long a reviewed token is trusted (0: review every call)", durField(func(c *Config) *time.Duration { return &c.Security.TokenTTL })},
		{"AUTHZ_POLICY", "authz-policy", "authorization policy file (YAML or JSON): methods allowed per caller; others are denied", strField(func(c *Config) *string { return &c.Security.PolicyFile })},
		{"AUTHZ_POLICY_INLINE", "authz-policy-inline", "authorization policy itself (YAML or JSON), instead of AUTHZ_POLICY", strField(func(c *Config) *string { return &c.Security.Policy })},
		{"LOG_LEVEL", "log-level", "log level: debug, info, warn, error", levelField(func(c *Config) *slog.Leveler { return &c.LogLevel })},
		{"RPC_LOG_LEVEL", "rpc-log-level", "level of the per-RPC log line", levelField(func(c *Config) *slog.Leveler { return &c.RPCLogLevel })},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "otlp-endpoint", "OTLP/gRPC collector URL (http:// or https://); enables tracing", strField(func(c *Config) *string { return &c.OTLPEndpoint })},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "otlp-traces-endpoint", "OTLP/gRPC collector URL for traces; wins over OTEL_EXPORTER_OTLP_ENDPOINT", strField(func(c *Config) *string { return &c.OTLPEndpoint })},
		{"OTEL_SERVICE_NAME", "service-name", "service.name of the traces (default: the program's name)", strField(func(c *Config) *string { return &c.ServiceName })},
		{"ORCA_PER_CALL", "orca-per-call", "send ORCA load reports in every response's trailers", func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			c.ORCAPerCall = b
			return nil
		}},
	}
}

func windowField(f func(*Config) *int32) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil {
			return errors.New("must be a whole number of bytes up to 2147483647")
		}
		*f(c) = int32(n)
		return nil
	}
}

func intField(f func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return errors.New("must be a whole number")
		}
		*f(c) = n
		return nil
	}
}

// memoryField reads MEMORY_LIMIT: bytes, as the downward API gives
// limits.memory, or a quantity as a manifest writes it (256Mi). Unlike
// the Config field, whose zero means "not known", the variable must be
// positive: a container cannot run in no memory, and a 0 here is a
// mistake to report, not a limit to apply.
func memoryField(c *Config, v string) error {
	q, err := resource.ParseQuantity(strings.TrimSpace(v))
	if err != nil {
		return errors.New("must be a number of bytes or a quantity such as 256Mi")
	}
	n := q.Value() // rounded up
	switch {
	case q.Cmp(*resource.NewQuantity(math.MaxInt64, resource.BinarySI)) > 0:
		return errors.New("must be at most 8Ei")
	case q.Cmp(*resource.NewQuantity(n, resource.BinarySI)) != 0:
		return errors.New("must be a whole number of bytes")
	case n <= 0:
		return errors.New("must be positive (unset it when the container has no memory limit)")
	}
	c.MemoryLimit = n
	return nil
}

func strField(f func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *f(c) = v; return nil }
}

func durField(f func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return errors.New("must be a duration such as 500ms, 10s or 1m")
		}
		*f(c) = d
		return nil
	}
}

func levelField(f func(*Config) *slog.Leveler) func(*Config, string) error {
	return func(c *Config, v string) error {
		var l slog.Level
		if err := l.UnmarshalText([]byte(v)); err != nil {
			return errors.New("must be debug, info, warn or error")
		}
		*f(c) = l
		return nil
	}
}

// LoadConfig returns DefaultConfig overridden by the environment (read
// through lookupEnv, usually os.LookupEnv) and then by the flags in args,
// validated. Each error names the setting, e.g.
// `invalid PORT "x": must be a whole number`. Flags are the lower-case,
// dashed form of the variables: --port, --drain-timeout, ...
func LoadConfig(args []string, lookupEnv func(string) (string, bool)) (Config, error) {
	c := DefaultConfig()
	var errs []error
	for _, s := range settings() {
		if v, ok := lookupEnv(s.env); ok && v != "" {
			if err := s.set(&c, v); err != nil {
				errs = append(errs, fmt.Errorf("invalid %s %q: %w", s.env, v, err))
			}
		}
	}
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(append(errs, c.Validate())...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// RegisterFlags registers one flag per setting on fs, writing into c when
// fs is parsed; the current values of c are the flags' defaults. Use it to
// combine kuberpc's flags with a program's own.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	for _, s := range settings() {
		fs.Func(s.flag, s.usage+" (env "+s.env+")", func(v string) error {
			if err := s.set(c, v); err != nil {
				return fmt.Errorf("invalid --%s %q: %w", s.flag, v, err)
			}
			return nil
		})
	}
}
