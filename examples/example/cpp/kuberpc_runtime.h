// kuberpc's runtime contract for C++ gRPC servers.
//
// One implementation, shared by the reference example server and every
// service `kuberpc new --lang cpp` scaffolds (which gets a copy):
//
//  - grpc.health.v1 (Check and Watch, overall and per service; its own,
//    since gRPC's cannot end Watch streams at the drain) and server
//    reflection (gRPC's plugin; the C++ gRPC Debian ships serves
//    grpc.reflection.v1alpha);
//  - /healthz (liveness: up while the process runs, also while draining),
//    /readyz (mirrors health) and /metrics on $METRICS_PORT (default 9090;
//    -1 disables), with the Go runtime's series, names and labels
//    (grpc_server_started_total, grpc_server_handled_total,
//    grpc_server_handling_seconds, grpc_server_in_flight);
//  - per-call ORCA load reports in the trailers when ORCA_PER_CALL is true
//    (CPU utilisation, RPS, EPS and in_flight, as the Go runtime sends);
//  - settings from the environment as the Go runtime reads them: PORT,
//    METRICS_PORT, DRAIN_DELAY and DRAIN_TIMEOUT as Go durations ("5s",
//    "500ms", "1m30s") or plain seconds, ORCA_PER_CALL; a bad one exits
//    with status 2 naming it; once serving, it prints "NAME listening on
//    :PORT, metrics on :PORT" with the ports bound (0 asks for a free one);
//  - the drain on SIGTERM or SIGINT: health NOT_SERVING at once, keep
//    serving DRAIN_DELAY, then end the health Watch streams (they would
//    hold the stop) and stop gracefully within DRAIN_TIMEOUT, which
//    cancels what still runs; if a handler ignores the cancellation the
//    process still exits, with status 0, one second later, naming how many
//    handlers were left. A second SIGTERM or SIGINT during the drain exits
//    at once with status 1 (the calls still running end with their
//    connections).
//
// Build against Debian's libgrpc++-dev (see the Makefile beside it).
#ifndef KUBERPC_RUNTIME_H_
#define KUBERPC_RUNTIME_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

namespace kuberpc {

// Settings are the runtime's settings, read from the environment.
struct Settings {
  int port = 50051;
  int metrics_port = 9090;  // -1: no metrics server
  double drain_delay = 5;   // seconds
  double drain_timeout = 20;
  bool orca_per_call = false;
};

// ParseDuration reads a Go duration ("1m30s", "250ms") or a plain number
// of seconds into *seconds. It returns false for anything else.
bool ParseDuration(const std::string& raw, double* seconds);

// LoadSettings reads Settings from the environment; a bad value exits with
// status 2 and a message naming the variable.
Settings LoadSettings();

class Metrics;
class Health;

// Runtime serves gRPC services under the contract above. Create it first
// in main, before any other thread: it blocks SIGTERM and SIGINT so that
// only its drain sees them.
class Runtime {
 public:
  Runtime();
  ~Runtime();

  // Builder is where the services are registered. The listening port,
  // health, reflection and the metrics interceptor are already added.
  grpc::ServerBuilder& Builder() { return builder_; }

  // Run starts the server, marks services (full names) SERVING, serves
  // until SIGTERM or SIGINT and drains. It returns the exit status.
  int Run(const std::vector<std::string>& services, const std::string& name);

 private:
  Settings settings_;
  int selected_port_ = 0;
  std::shared_ptr<Metrics> metrics_;
  std::unique_ptr<Health> health_;
  grpc::ServerBuilder builder_;
};

}  // namespace kuberpc

#endif  // KUBERPC_RUNTIME_H_
