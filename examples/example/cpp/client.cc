// Calls ExampleService.SayHello at ADDRESS (argv[1], host:port) once per
// name in argv[2:] and prints each reply on its own line. Used by the
// interop and cluster tests.
#include <chrono>
#include <cstdio>

#include <grpcpp/grpcpp.h>

#include "example.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: client HOST:PORT NAME...\n");
    return 2;
  }
  auto stub = example::ExampleService::NewStub(grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials()));
  for (int i = 2; i < argc; i++) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    example::Request req;
    req.set_id(i - 2);
    req.set_name(argv[i]);
    example::Response resp;
    grpc::Status st = stub->SayHello(&ctx, req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "SayHello: %d %s\n", st.error_code(), st.error_message().c_str());
      return 1;
    }
    std::printf("%s\n", resp.message().c_str());
    std::fflush(stdout);
  }
  return 0;
}
