#!/usr/bin/python3
"""The reference ExampleService (and StreamService) on Python grpcio.

It serves the same proto as the Go example, on the port in $PORT (default
50051), with grpc.health.v1 (overall and per service), /healthz and /readyz
on $METRICS_PORT, and drains on SIGTERM like the kuberpc Go runtime (see
kuberpc_runtime.py, which every scaffolded Python service shares).

Run it with Debian's /usr/bin/python3, which owns python3-grpcio.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import example_pb2  # noqa: E402
import example_pb2_grpc  # noqa: E402
import health_pb2_grpc  # noqa: E402
import kuberpc_runtime  # noqa: E402
import stream_pb2  # noqa: E402,F401  (registers stream.proto, for reflection)
import stream_pb2_grpc  # noqa: E402

MAX_GREETINGS = 10000
MAX_COLLECTED = 64 << 10  # bytes of names CollectNames keeps per stream, as the Go server


def greeting(name):
    return "Hello, %s!" % name


class Greeter(example_pb2_grpc.ExampleServiceServicer, stream_pb2_grpc.StreamServiceServicer):
    def SayHello(self, request, context):
        return example_pb2.Response(message=greeting(request.name))

    def Greetings(self, request, context):
        n = request.id
        if n < 0 or n > MAX_GREETINGS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "id %d out of range: Greetings sends 0-%d greetings" % (n, MAX_GREETINGS))
        for i in range(1, n + 1):
            yield example_pb2.Response(message="%s (%d/%d)" % (greeting(request.name), i, n))

    def CollectNames(self, request_iterator, context):
        names, size = [], 0
        for r in request_iterator:
            size += len(r.name.encode()) + 2
            if size > MAX_COLLECTED:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              "CollectNames keeps at most %d bytes of names per stream" % MAX_COLLECTED)
            names.append(r.name)
        return example_pb2.Response(message=greeting(", ".join(names)))

    def Chat(self, request_iterator, context):
        for r in request_iterator:
            yield example_pb2.Response(message=greeting(r.name))


def main():
    server = kuberpc_runtime.new_server()
    greeter = Greeter()
    example_pb2_grpc.add_ExampleServiceServicer_to_server(greeter, server)
    stream_pb2_grpc.add_StreamServiceServicer_to_server(greeter, server)
    health = kuberpc_runtime.Health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    kuberpc_runtime.run(server, health, ("example.ExampleService", "example.StreamService"), name="python example server")


if __name__ == "__main__":
    main()
