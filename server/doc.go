// Package server is the kuberpc server runtime: a thin layer over
// grpc.Server that makes a gRPC service behave well on Kubernetes.
//
// A Server adds, on top of the services the author registers:
//
//   - the grpc.health.v1 health service (overall and per service) and server
//     reflection;
//   - graceful drain on SIGTERM/SIGINT (see Drain): health flips to
//     NOT_SERVING, the server keeps serving for a propagation delay so that
//     endpoints and clients notice, then stops gracefully (GOAWAY, in-flight
//     RPCs and streams finish) with a hard deadline after which remaining
//     streams end with codes.Unavailable and a message saying so; a second
//     signal during the drain cuts it short (Run returns ErrDrainCut);
//   - keepalive enforcement and a maximum connection age so that long-lived
//     clients rebalance;
//   - Prometheus metrics on an HTTP port (/metrics) with /healthz and /readyz;
//   - OpenTelemetry tracing through otelgrpc (off unless configured) and one
//     slog line per RPC;
//   - ORCA load reports (CPU utilisation, RPS, errors/s, in-flight RPCs) for
//     weighted balancing;
//   - limits: message sizes, concurrent streams, in-flight RPCs (load
//     shedding), a default deadline for unary RPCs, and panic recovery;
//   - the Go runtime's soft memory limit at MemoryLimitShare of the
//     container's (Config.MemoryLimit), unless GOMEMLIMIT is set.
//
// Configuration comes from a Config, which LoadConfig fills from flags and
// the conventional environment variables (PORT, POD_NAME, POD_NAMESPACE,
// POD_IP, ...), validating every setting.
package server
