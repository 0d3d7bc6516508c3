// The reference ExampleService (and StreamService) on C++ gRPC.
//
// It serves the same proto as the Go example, on the port in $PORT
// (default 50051), with grpc.health.v1, reflection, /healthz, /readyz and
// /metrics on $METRICS_PORT, and drains on SIGTERM like the kuberpc Go
// runtime (see kuberpc_runtime.h, which every scaffolded C++ service
// shares).
#include <string>

#include "example.grpc.pb.h"
#include "kuberpc_runtime.h"
#include "stream.grpc.pb.h"

namespace {

constexpr int kMaxGreetings = 10000;
constexpr size_t kMaxCollected = 64 << 10;  // bytes of names CollectNames keeps per stream, as the Go server

std::string Greeting(const std::string& name) { return "Hello, " + name + "!"; }

class Greeter final : public example::ExampleService::Service {
  grpc::Status SayHello(grpc::ServerContext*, const example::Request* req, example::Response* resp) override {
    resp->set_message(Greeting(req->name()));
    return grpc::Status::OK;
  }
};

class Streams final : public example::StreamService::Service {
  grpc::Status Greetings(grpc::ServerContext* ctx, const example::Request* req,
                         grpc::ServerWriter<example::Response>* w) override {
    int n = req->id();
    if (n < 0 || n > kMaxGreetings) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id " + std::to_string(n) +
                                                                  " out of range: Greetings sends 0-" +
                                                                  std::to_string(kMaxGreetings) + " greetings");
    }
    example::Response r;
    for (int i = 1; i <= n; i++) {
      if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      r.set_message(Greeting(req->name()) + " (" + std::to_string(i) + "/" + std::to_string(n) + ")");
      if (!w->Write(r)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status CollectNames(grpc::ServerContext*, grpc::ServerReader<example::Request>* r,
                            example::Response* resp) override {
    std::string names;
    size_t size = 0;
    example::Request req;
    while (r->Read(&req)) {
      size += req.name().size() + 2;
      if (size > kMaxCollected) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "CollectNames keeps at most " +
                                                                      std::to_string(kMaxCollected) +
                                                                      " bytes of names per stream");
      }
      if (!names.empty()) names += ", ";
      names += req.name();
    }
    resp->set_message(Greeting(names));
    return grpc::Status::OK;
  }

  grpc::Status Chat(grpc::ServerContext*, grpc::ServerReaderWriter<example::Response, example::Request>* s) override {
    example::Request req;
    example::Response resp;
    while (s->Read(&req)) {
      resp.set_message(Greeting(req.name()));
      if (!s->Write(resp)) break;
    }
    return grpc::Status::OK;
  }
};

}  // namespace

int main() {
  kuberpc::Runtime rt;
  Greeter greeter;
  Streams streams;
  rt.Builder().RegisterService(&greeter);
  rt.Builder().RegisterService(&streams);
  return rt.Run({"example.ExampleService", "example.StreamService"}, "c++ example server");
}
