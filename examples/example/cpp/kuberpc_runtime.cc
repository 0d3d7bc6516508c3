// kuberpc's runtime contract for C++ gRPC servers: see kuberpc_runtime.h.
#include "kuberpc_runtime.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/support/server_interceptor.h>

#include "health.grpc.pb.h"

namespace kuberpc {

namespace {

[[noreturn]] void Fail(const std::string& msg) {
  std::fprintf(stderr, "%s\n", msg.c_str());
  std::fflush(stderr);
  std::exit(2);
}

double Unit(const std::string& u) {
  if (u == "ns") return 1e-9;
  if (u == "us" || u == "\xc2\xb5s") return 1e-6;
  if (u == "ms") return 1e-3;
  if (u == "s") return 1;
  if (u == "m") return 60;
  if (u == "h") return 3600;
  return -1;
}

double EnvDuration(const char* name, double def) {
  const char* raw = std::getenv(name);
  if (raw == nullptr || *raw == '\0') return def;
  double v;
  if (!ParseDuration(raw, &v) || std::isnan(v)) {
    Fail(std::string("invalid ") + name + " '" + raw + "': must be a duration such as 500ms, 10s or 1m");
  }
  if (v < 0) Fail(std::string("invalid ") + name + " '" + raw + "': must not be negative");
  // 2562047h, the whole hours of Go's longest duration (the Go runtime's
  // bound).
  if (v > 2562047.0 * 3600) {
    Fail(std::string("invalid ") + name + " '" + raw + "': must be at most 2562047h (Go's longest duration, in whole hours)");
  }
  return v;
}

int EnvPort(const char* name, int def, bool allow_off) {
  const char* raw = std::getenv(name);
  if (raw == nullptr || *raw == '\0') return def;
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(raw, &end, 10);
  if (errno != 0 || end == raw || *end != '\0') {
    Fail(std::string("invalid ") + name + " '" + raw + "': must be a whole number");
  }
  if (allow_off && v == -1) return -1;
  if (v < 0 || v > 65535) {
    Fail(std::string("invalid ") + name + " " + raw + ": must be a port number in 1-65535, or 0 for a free port");
  }
  return static_cast<int>(v);
}

bool EnvBool(const char* name) {
  const char* raw = std::getenv(name);
  if (raw == nullptr || *raw == '\0') return false;
  std::string s(raw);
  // Go's strconv.ParseBool.
  if (s == "1" || s == "t" || s == "T" || s == "true" || s == "TRUE" || s == "True") return true;
  if (s == "0" || s == "f" || s == "F" || s == "false" || s == "FALSE" || s == "False") return false;
  Fail(std::string("invalid ") + name + " '" + raw + "': must be true or false");
}

// The status codes as Go names them (codes.Code.String()).
const char* CodeName(int code) {
  static const char* const kNames[] = {
      "OK",       "Canceled",           "Unknown",  "InvalidArgument",  "DeadlineExceeded", "NotFound",
      "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
      "OutOfRange", "Unimplemented",    "Internal", "Unavailable",      "DataLoss",         "Unauthenticated"};
  if (code < 0 || code > 16) return "Unknown";
  return kNames[code];
}

const char* TypeName(grpc::experimental::ServerRpcInfo::Type t) {
  using T = grpc::experimental::ServerRpcInfo::Type;
  switch (t) {
    case T::UNARY: return "unary";
    case T::CLIENT_STREAMING: return "client_stream";
    case T::SERVER_STREAMING: return "server_stream";
    case T::BIDI_STREAMING: return "bidi_stream";
  }
  return "unary";
}

// The Go runtime's histogram buckets (internal/rpcmetrics.DefaultBuckets).
const double kBuckets[] = {.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
constexpr int kNumBuckets = sizeof(kBuckets) / sizeof(kBuckets[0]);

// Calls to the health, reflection and ORCA services are monitoring, not
// load: the Go runtime neither counts nor sheds them.
bool Monitoring(const std::string& method) {
  return method.rfind("/grpc.health.v1.Health/", 0) == 0 || method.rfind("/grpc.reflection.", 0) == 0 ||
         method.rfind("/xds.service.orca.v3.", 0) == 0;
}

double CPUSeconds() {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

void PutFixed64(std::string* out, int field, double v) {
  out->push_back(static_cast<char>(field << 3 | 1));
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  for (int i = 0; i < 8; i++) out->push_back(static_cast<char>(bits >> (8 * i)));
}

}  // namespace

bool ParseDuration(const std::string& in, double* seconds) {
  std::string raw = in;
  while (!raw.empty() && std::isspace(static_cast<unsigned char>(raw.back()))) raw.pop_back();
  size_t b = 0;
  while (b < raw.size() && std::isspace(static_cast<unsigned char>(raw[b]))) b++;
  raw = raw.substr(b);
  if (raw.empty()) return false;
  {  // a plain number of seconds
    char* end = nullptr;
    double v = std::strtod(raw.c_str(), &end);
    if (end != raw.c_str() && *end == '\0' && std::isfinite(v)) {
      *seconds = v;
      return true;
    }
  }
  double sign = 1;
  size_t pos = 0;
  if (raw[0] == '+' || raw[0] == '-') {
    sign = raw[0] == '-' ? -1 : 1;
    pos = 1;
  }
  if (pos == raw.size()) return false;
  if (raw.substr(pos) == "0") {
    *seconds = 0;
    return true;
  }
  double total = 0;
  while (pos < raw.size()) {
    size_t start = pos;
    bool digits = false;
    while (pos < raw.size() && (std::isdigit(static_cast<unsigned char>(raw[pos])) || raw[pos] == '.')) {
      digits = digits || raw[pos] != '.';
      pos++;
    }
    if (!digits) return false;
    std::string num = raw.substr(start, pos - start);
    if (std::count(num.begin(), num.end(), '.') > 1) return false;
    size_t ustart = pos;
    while (pos < raw.size() && !std::isdigit(static_cast<unsigned char>(raw[pos])) && raw[pos] != '.') pos++;
    double unit = Unit(raw.substr(ustart, pos - ustart));
    if (unit < 0) return false;
    total += std::strtod(num.c_str(), nullptr) * unit;
  }
  *seconds = sign * total;
  return std::isfinite(*seconds);
}

Settings LoadSettings() {
  Settings s;
  s.port = EnvPort("PORT", 50051, false);
  s.metrics_port = EnvPort("METRICS_PORT", 9090, true);
  s.drain_delay = EnvDuration("DRAIN_DELAY", 5);
  s.drain_timeout = EnvDuration("DRAIN_TIMEOUT", 20);
  s.orca_per_call = EnvBool("ORCA_PER_CALL");
  return s;
}

// Metrics are the per-method RPC metrics with the Go runtime's names and
// labels, and the load the ORCA reports carry.
class Metrics {
 public:
  using Key = std::tuple<std::string, std::string, std::string>;  // service, method, type

  void Start(const Key& k) {
    std::lock_guard<std::mutex> l(mu_);
    started_[k]++;
    in_flight_[k]++;
    total_in_flight_++;
  }

  void Done(const Key& k, int code, double seconds) {
    std::lock_guard<std::mutex> l(mu_);
    in_flight_[k]--;
    total_in_flight_--;
    handled_[std::make_tuple(std::get<0>(k), std::get<1>(k), std::get<2>(k), std::string(CodeName(code)))]++;
    Hist& h = hist_[k];
    for (int i = 0; i < kNumBuckets; i++) {
      if (seconds <= kBuckets[i]) h.counts[i]++;
    }
    h.sum += seconds;
    h.count++;
    total_++;
    if (code != 0) errors_++;
  }

  long InFlight() {
    std::lock_guard<std::mutex> l(mu_);
    return total_in_flight_;
  }

  std::string Render() {
    std::ostringstream o;
    auto labels = [](const Key& k) {
      return "grpc_service=\"" + std::get<0>(k) + "\",grpc_method=\"" + std::get<1>(k) + "\",grpc_type=\"" +
             std::get<2>(k) + "\"";
    };
    std::lock_guard<std::mutex> l(mu_);
    o << "# HELP grpc_server_started_total RPCs started on the server.\n# TYPE grpc_server_started_total counter\n";
    for (auto& [k, v] : started_) o << "grpc_server_started_total{" << labels(k) << "} " << v << "\n";
    o << "# HELP grpc_server_handled_total RPCs completed on the server, by status code.\n"
         "# TYPE grpc_server_handled_total counter\n";
    for (auto& [k, v] : handled_) {
      Key mk(std::get<0>(k), std::get<1>(k), std::get<2>(k));
      o << "grpc_server_handled_total{" << labels(mk) << ",grpc_code=\"" << std::get<3>(k) << "\"} " << v << "\n";
    }
    o << "# HELP grpc_server_handling_seconds Time from RPC start to completion on the server.\n"
         "# TYPE grpc_server_handling_seconds histogram\n";
    char num[64];
    for (auto& [k, h] : hist_) {
      for (int i = 0; i < kNumBuckets; i++) {
        std::snprintf(num, sizeof num, "%g", kBuckets[i]);
        o << "grpc_server_handling_seconds_bucket{" << labels(k) << ",le=\"" << num << "\"} " << h.counts[i] << "\n";
      }
      o << "grpc_server_handling_seconds_bucket{" << labels(k) << ",le=\"+Inf\"} " << h.count << "\n";
      std::snprintf(num, sizeof num, "%.17g", h.sum);
      o << "grpc_server_handling_seconds_sum{" << labels(k) << "} " << num << "\n";
      o << "grpc_server_handling_seconds_count{" << labels(k) << "} " << h.count << "\n";
    }
    o << "# HELP grpc_server_in_flight RPCs in flight on the server.\n# TYPE grpc_server_in_flight gauge\n";
    for (auto& [k, v] : in_flight_) o << "grpc_server_in_flight{" << labels(k) << "} " << v << "\n";
    return o.str();
  }

  // Sample updates the load of the ORCA reports; called once a second.
  void Sample(double cpu_util, double wall) {
    std::lock_guard<std::mutex> l(mu_);
    cpu_util_ = cpu_util;
    rps_ = (total_ - prev_total_) / wall;
    eps_ = (errors_ - prev_errors_) / wall;
    prev_total_ = total_;
    prev_errors_ = errors_;
  }

  // OrcaReport is an xds.data.orca.v3.OrcaLoadReport, serialized.
  std::string OrcaReport() {
    std::lock_guard<std::mutex> l(mu_);
    std::string out;
    PutFixed64(&out, 1, cpu_util_);  // cpu_utilization
    PutFixed64(&out, 6, rps_);       // rps_fractional
    PutFixed64(&out, 7, eps_);       // eps
    std::string entry;               // named_metrics {"in_flight": n}
    entry.push_back(0x0a);
    entry.push_back(9);
    entry += "in_flight";
    PutFixed64(&entry, 2, static_cast<double>(total_in_flight_));
    out.push_back(static_cast<char>(8 << 3 | 2));
    out.push_back(static_cast<char>(entry.size()));
    out += entry;
    return out;
  }

 private:
  struct Hist {
    long counts[kNumBuckets] = {};
    double sum = 0;
    long count = 0;
  };
  std::mutex mu_;
  std::map<Key, long> started_, in_flight_;
  std::map<std::tuple<std::string, std::string, std::string, std::string>, long> handled_;
  std::map<Key, Hist> hist_;
  long total_in_flight_ = 0, total_ = 0, errors_ = 0, prev_total_ = 0, prev_errors_ = 0;
  double cpu_util_ = 0, rps_ = 0, eps_ = 0;
};

namespace {

// MetricsInterceptor counts one RPC, whatever its shape.
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(std::shared_ptr<Metrics> m, grpc::experimental::ServerRpcInfo* info, bool orca)
      : m_(std::move(m)), orca_(orca) {
    std::string full = info->method();
    std::string s = full.substr(full.empty() || full[0] != '/' ? 0 : 1);
    size_t slash = s.rfind('/');
    key_ = slash == std::string::npos ? Metrics::Key("unknown", s, TypeName(info->type()))
                                      : Metrics::Key(s.substr(0, slash), s.substr(slash + 1), TypeName(info->type()));
    skip_ = Monitoring(full);
  }

  ~MetricsInterceptor() override {
    // A call that ended without a status of ours (the client cancelled,
    // the server stopped) still leaves the in-flight count.
    if (started_ && !done_) m_->Done(key_, grpc::StatusCode::CANCELLED, Since());
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using H = grpc::experimental::InterceptionHookPoints;
    if (!skip_ && !started_ && methods->QueryInterceptionHookPoint(H::POST_RECV_INITIAL_METADATA)) {
      started_ = true;
      start_ = std::chrono::steady_clock::now();
      m_->Start(key_);
    }
    if (!skip_ && started_ && !done_ && methods->QueryInterceptionHookPoint(H::PRE_SEND_STATUS)) {
      done_ = true;
      if (orca_) methods->GetSendTrailingMetadata()->emplace("endpoint-load-metrics-bin", m_->OrcaReport());
      m_->Done(key_, methods->GetSendStatus().error_code(), Since());
    }
    methods->Proceed();
  }

 private:
  double Since() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  std::shared_ptr<Metrics> m_;
  bool orca_;
  Metrics::Key key_;
  bool skip_ = false, started_ = false, done_ = false;
  std::chrono::steady_clock::time_point start_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  MetricsInterceptorFactory(std::shared_ptr<Metrics> m, bool orca) : m_(std::move(m)), orca_(orca) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(m_, info, orca_);
  }

 private:
  std::shared_ptr<Metrics> m_;
  bool orca_;
};

// HTTPServer answers /healthz, /readyz and /metrics, a thread per
// connection. At most kMaxConns are open at once; a new one past that
// ends the oldest, so that clients holding connections idle (slowloris)
// cannot keep the kubelet's liveness probe out.
class HTTPServer {
 public:
  HTTPServer(int port, std::shared_ptr<Metrics> m, std::function<bool()> ready)
      : m_(std::move(m)), ready_(std::move(ready)) {
    fd_ = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1, zero = 0;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd_, 64) != 0) {
      Fail("listen on METRICS_PORT " + std::to_string(port) + " failed: " + std::strerror(errno));
    }
    std::thread([this] { Loop(); }).detach();
  }

  // Port is the port bound, the one asked for or, for 0, the one chosen.
  int Port() const {
    sockaddr_in6 a{};
    socklen_t n = sizeof a;
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &n) != 0) return -1;
    return ntohs(a.sin6_port);
  }

 private:
  static constexpr size_t kMaxConns = 64;

  void Loop() {
    for (;;) {
      int c = accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (open_.size() >= kMaxConns) {
          // Wake the oldest connection's thread: its read fails, and it
          // closes the connection and forgets it.
          shutdown(open_.begin()->second, SHUT_RDWR);
          open_.erase(open_.begin());
        }
        open_.emplace(seq_++, c);
      }
      uint64_t id = seq_ - 1;
      std::thread([this, c, id] {
        Serve(c);
        {
          std::lock_guard<std::mutex> l(mu_);
          open_.erase(id);
        }
        close(c);
      }).detach();
    }
  }

  void Serve(int c) {
    timeval tv{5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string req;
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
      ssize_t n = read(c, buf, sizeof buf);
      if (n <= 0) return;
      req.append(buf, n);
    }
    std::string path;
    size_t sp = req.find(' ');
    if (sp != std::string::npos) path = req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
    int code = 200;
    std::string body;
    if (req.rfind("GET ", 0) != 0) {
      code = 405, body = "method not allowed\n";
    } else if (path == "/healthz") {
      body = "ok\n";
    } else if (path == "/readyz") {
      if (ready_()) {
        body = "ok\n";
      } else {
        code = 503, body = "not serving\n";
      }
    } else if (path == "/metrics") {
      body = m_->Render();
    } else {
      code = 404, body = "not found\n";
    }
    const char* reason = code == 200 ? "OK" : code == 404 ? "Not Found" : code == 405 ? "Method Not Allowed" : "Service Unavailable";
    std::string resp = "HTTP/1.1 " + std::to_string(code) + " " + reason +
                       "\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body;
    for (size_t off = 0; off < resp.size();) {
      ssize_t n = write(c, resp.data() + off, resp.size() - off);
      if (n <= 0) return;
      off += n;
    }
  }

  int fd_;
  std::mutex mu_;
  std::map<uint64_t, int> open_;  // connections by age (accept order)
  uint64_t seq_ = 0;              // accept thread only
  std::shared_ptr<Metrics> m_;
  std::function<bool()> ready_;
};

}  // namespace

// Health is grpc.health.v1 with Check and Watch, per service. gRPC's own
// health service cannot end its Watch streams, which would hold every
// drain to DRAIN_TIMEOUT while a client health-checks.
class Health final : public grpc::health::v1::Health::Service {
 public:
  using Resp = grpc::health::v1::HealthCheckResponse;

  void Set(const std::string& service, Resp::ServingStatus s) {
    std::lock_guard<std::mutex> l(mu_);
    status_[service] = s;
    cv_.notify_all();
  }

  bool Serving() {
    std::lock_guard<std::mutex> l(mu_);
    auto it = status_.find("");
    return it != status_.end() && it->second == Resp::SERVING;
  }

  // Shutdown turns every service NOT_SERVING, for good.
  void Shutdown() {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [k, v] : status_) v = Resp::NOT_SERVING;
    cv_.notify_all();
  }

  // StopWatches ends every Watch stream, so that they do not hold the stop.
  void StopWatches() {
    std::lock_guard<std::mutex> l(mu_);
    stopped_ = true;
    cv_.notify_all();
  }

  grpc::Status Check(grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest* req, Resp* resp) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = status_.find(req->service());
    if (it == status_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + req->service() + "'");
    resp->set_status(it->second);
    return grpc::Status::OK;
  }

  grpc::Status Watch(grpc::ServerContext* ctx, const grpc::health::v1::HealthCheckRequest* req,
                     grpc::ServerWriter<Resp>* w) override {
    int last = -1;
    std::unique_lock<std::mutex> l(mu_);
    while (!stopped_ && !ctx->IsCancelled()) {
      auto it = status_.find(req->service());
      int cur = it == status_.end() ? Resp::SERVICE_UNKNOWN : it->second;
      if (cur != last) {
        last = cur;
        Resp r;
        r.set_status(static_cast<Resp::ServingStatus>(cur));
        l.unlock();
        bool ok = w->Write(r);
        l.lock();
        if (!ok) break;
        continue;
      }
      cv_.wait_for(l, std::chrono::seconds(1));
    }
    return grpc::Status::OK;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Resp::ServingStatus> status_;
  bool stopped_ = false;
};

Runtime::Runtime()
    : settings_(LoadSettings()), metrics_(std::make_shared<Metrics>()), health_(std::make_unique<Health>()) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  grpc::EnableDefaultHealthCheckService(false);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  builder_.RegisterService(health_.get());
  builder_.AddListeningPort("[::]:" + std::to_string(settings_.port), grpc::InsecureServerCredentials(),
                            &selected_port_);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<MetricsInterceptorFactory>(metrics_, settings_.orca_per_call));
  builder_.experimental().SetInterceptorCreators(std::move(creators));
}

Runtime::~Runtime() = default;

int Runtime::Run(const std::vector<std::string>& services, const std::string& name) {
  std::unique_ptr<grpc::Server> server = builder_.BuildAndStart();
  if (server == nullptr || selected_port_ == 0) {
    std::fprintf(stderr, "listen on PORT %d failed\n", settings_.port);
    return 1;
  }
  Health* health = health_.get();
  health->Set("", Health::Resp::SERVING);
  for (const auto& s : services) health->Set(s, Health::Resp::SERVING);

  std::unique_ptr<HTTPServer> http;
  if (settings_.metrics_port >= 0) {
    http = std::make_unique<HTTPServer>(settings_.metrics_port, metrics_, [health] { return health->Serving(); });
  }
  // The load the ORCA reports carry, sampled once a second.
  std::thread([m = metrics_] {
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    double prev_cpu = CPUSeconds();
    auto prev = std::chrono::steady_clock::now();
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      double cpu = CPUSeconds();
      auto now = std::chrono::steady_clock::now();
      double wall = std::chrono::duration<double>(now - prev).count();
      if (wall > 0) m->Sample(std::min(1.0, (cpu - prev_cpu) / wall / cores), wall);
      prev_cpu = cpu, prev = now;
    }
  }).detach();
  // The ports bound (0 asks for a free one): "NAME listening on :P" and,
  // when /metrics is served, ", metrics on :M".
  std::string metrics_on = http ? ", metrics on :" + std::to_string(http->Port()) : "";
  std::printf("%s listening on :%d%s\n", name.c_str(), selected_port_, metrics_on.c_str());
  std::fflush(stdout);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);

  std::printf("draining: health NOT_SERVING\n");
  std::fflush(stdout);
  // A second SIGTERM or SIGINT stops the process at once, with status 1.
  // grpc++'s Shutdown cannot be cut short once running (a second call
  // waits for the first), so the calls still running end as their
  // connections close.
  std::thread([set] {
    int again = 0;
    sigwait(&set, &again);
    std::printf("second signal during the drain: stopping at once\n");
    std::fflush(stdout);
    _exit(1);
  }).detach();
  health->Shutdown();
  std::this_thread::sleep_for(std::chrono::duration<double>(settings_.drain_delay));
  health->StopWatches();
  // A handler that ignores its cancellation must not keep the process up
  // past the drain's bound.
  double timeout = settings_.drain_timeout;
  std::thread([m = metrics_, timeout] {
    std::this_thread::sleep_for(std::chrono::duration<double>(timeout + 1));
    std::printf("stopped: %ld handlers still running %gs after DRAIN_TIMEOUT; exiting\n", m->InFlight(), 1.0);
    std::fflush(stdout);
    _exit(0);
  }).detach();
  // now + timeout would overflow the clock's nanoseconds past about 2262
  // (undefined behaviour, which grpc++ happened to read as no deadline);
  // time_point::max() is its documented no deadline.
  auto now = std::chrono::system_clock::now();
  auto deadline = std::chrono::system_clock::time_point::max();
  if (timeout < std::chrono::duration<double>(deadline - now).count()) {
    deadline = now + std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(timeout));
  }
  server->Shutdown(deadline);
  server->Wait();
  std::printf("stopped\n");
  std::fflush(stdout);
  return 0;
}

}  // namespace kuberpc
