// Package client dials kuberpc services with defaults that suit
// Kubernetes: per-request load balancing (round_robin unless chosen
// otherwise), a retry policy for UNAVAILABLE on idempotent methods, a
// default deadline, keepalive, Prometheus metrics and optional
// OpenTelemetry tracing.
//
// The defaults cost what raw grpc-go costs, give or take a few percent
// (bench/results.md): the default deadline is a shared safety net rather
// than a timer per call (see WithDefaultDeadline), the flow-control
// windows are grpc-go's own (sized by its bandwidth-delay estimation:
// static ones cost a client QPS at one call at a time; the server's are
// static), and nothing on the path of a successful call takes a lock
// shared by all calls. bench/results.md measures what is
// left against raw grpc-go, default and tuned alike. WithFastPath adds
// vtprotobuf marshalling for messages of 1 KiB and more, and a second
// connection to each endpoint for when many calls are in flight
// (WithConnectionsPerEndpoint).
//
// # Many endpoints
//
// By default a client connects to every ready endpoint of a Service. For
// Services with hundreds or thousands of pods, the kubernetes resolver's
// WithSubsetSize gives each client a subset of its own (rendezvous
// hashing), so it holds that many connections, and an endpoint change
// outside the subset costs the client nothing beyond the resolver's merge.
//
// Dial works with every target grpc.NewClient understands (dns:///,
// passthrough:///, unix:) and, once the kubernetes resolver package is
// imported, with kubernetes:///name.namespace:port.
//
// # Retries
//
// Only idempotent methods are retried, because a retried RPC may run twice
// on the server. A method is idempotent when its proto declares
// `option idempotency_level = IDEMPOTENT` (or NO_SIDE_EFFECTS), which Dial
// reads from the generated code linked into the program, or when it is
// named with WithIdempotentMethods. gRPC's transparent retry (an RPC that
// never reached a server) applies to every method regardless. Retries
// are throttled as gRPC specifies: they go on while fewer than about 1
// call in 11 fails, after a burst of up to 50 failures, so that an outage
// is not multiplied by the attempts.
//
// Where a retry goes: with kuberpc's policies (random, p2c_ewma,
// least_request) every attempt of a call, retries by policy, transparent
// retries, retries of refusals and hedges alike, goes to a READY endpoint
// the call has not tried while there is one, so a replica that failed a
// call does not see it again. grpc-go's round_robin (the default) and
// weighted_round_robin send a retry to the next endpoint of their
// rotation, which under concurrency can be the one that failed; outlier
// detection ejects a replica that keeps failing.
//
// Which methods are safe to retry: reads (Get, List, Watch-style unary
// calls), writes keyed by a client-chosen ID (create-if-absent, put), and
// anything the service makes idempotent with a request ID it deduplicates.
// Not safe: increments, appends, sends (email, payment) without such an
// ID. The reference SayHello has no side effect and is safe.
//
// # Hedging
//
// WithHedging sends a second (third, ...) copy of a slow unary call to
// another endpoint (one the call has not tried, with kuberpc's policies;
// see Retries) and takes the first answer, trading extra load for a
// shorter tail. grpc-go parses but does not implement the service config's
// hedgingPolicy, so kuberpc hedges in its client interceptor.
package client
