// Package client dials kuberpc services with defaults that suit
// Kubernetes: per-request load balancing (round_robin unless chosen
// otherwise), a retry policy for UNAVAILABLE on idempotent methods, a
// default deadline, keepalive, Prometheus metrics and optional
// OpenTelemetry tracing.
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
// never reached a server) applies to every method regardless.
package client
