#!/usr/bin/python3
"""The reference ExampleService (and StreamService) on Python grpcio.

It serves the same proto as the Go example, on the port in $PORT (default
50051), with grpc.health.v1 (overall and per service). On SIGTERM or SIGINT
it drains like the kuberpc Go runtime: health turns NOT_SERVING, it keeps
serving for $DRAIN_DELAY seconds (default 5), then stops gracefully with a
$DRAIN_TIMEOUT (default 20) second grace.

Run it with Debian's /usr/bin/python3, which owns python3-grpcio.
"""

import os
import signal
import sys
import threading
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import example_pb2  # noqa: E402
import example_pb2_grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
import stream_pb2_grpc  # noqa: E402

MAX_GREETINGS = 10000


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
        return example_pb2.Response(message=greeting(", ".join(r.name for r in request_iterator)))

    def Chat(self, request_iterator, context):
        for r in request_iterator:
            yield example_pb2.Response(message=greeting(r.name))


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 with Check and Watch, per service."""

    def __init__(self):
        self._cond = threading.Condition()
        self._status = {}
        self._stopped = False

    def set(self, service, status):
        with self._cond:
            self._status[service] = status
            self._cond.notify_all()

    def shutdown(self):
        with self._cond:
            for s in self._status:
                self._status[s] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._cond.notify_all()

    def stop_watches(self):
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def Check(self, request, context):
        with self._cond:
            if request.service not in self._status:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %r" % request.service)
            return health_pb2.HealthCheckResponse(status=self._status[request.service])

    def Watch(self, request, context):
        last = None
        while context.is_active():
            with self._cond:
                if self._stopped:
                    return
                cur = self._status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                if cur == last:
                    self._cond.wait(timeout=1.0)
                    continue
                last = cur
            yield health_pb2.HealthCheckResponse(status=cur)


def env_number(name, default, kind):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        v = kind(raw)
    except ValueError:
        sys.exit("invalid %s %r: must be a number" % (name, raw))
    if v < 0:
        sys.exit("invalid %s %r: must not be negative" % (name, raw))
    return v


def main():
    port = env_number("PORT", 50051, int)
    if not 1 <= port <= 65535:
        sys.exit("invalid PORT %d: must be a port number in 1-65535" % port)
    delay = env_number("DRAIN_DELAY", 5.0, float)
    timeout = env_number("DRAIN_TIMEOUT", 20.0, float)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    greeter = Greeter()
    example_pb2_grpc.add_ExampleServiceServicer_to_server(greeter, server)
    stream_pb2_grpc.add_StreamServiceServicer_to_server(greeter, server)
    health = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port("[::]:%d" % port) == 0:
        sys.exit("listen on PORT %d failed" % port)
    server.start()
    for svc in ("", "example.ExampleService", "example.StreamService"):
        health.set(svc, health_pb2.HealthCheckResponse.SERVING)
    print("python example server listening on :%d" % port, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    print("draining: health NOT_SERVING", flush=True)
    health.shutdown()
    stop.wait(0)
    threading.Event().wait(delay)
    health.stop_watches()
    server.stop(timeout).wait()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
