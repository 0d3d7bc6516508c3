#!/usr/bin/python3
"""A plain grpcio ExampleService, as a team not using kuberpc writes it.

No grpc.health.v1, no /healthz, no metrics, and no SIGTERM handling: the
process dies at once on SIGTERM. kuberpc deploys it with `probes: {type:
tcp}` and `drain: {preStopSleep: ...}` (see e2e/foreign_test.go), which is
what lets it drain without failed calls.

Run it with Debian's /usr/bin/python3, which owns python3-grpcio.
"""

import os
import sys
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import example_pb2  # noqa: E402
import example_pb2_grpc  # noqa: E402


class Greeter(example_pb2_grpc.ExampleServiceServicer):
    def SayHello(self, request, context):
        return example_pb2.Response(message="Hello, %s!" % request.name)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    example_pb2_grpc.add_ExampleServiceServicer_to_server(Greeter(), server)
    server.add_insecure_port("[::]:%s" % os.environ.get("PORT", "50051"))
    server.start()
    print("plain grpcio server on port %s" % os.environ.get("PORT", "50051"), flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
