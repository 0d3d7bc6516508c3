"""kuberpc's runtime contract for Python grpcio servers.

One implementation, shared by the reference example server and every
service `kuberpc new --lang python` scaffolds (which gets a copy):

- grpc.health.v1 (Check and Watch, per service) and server reflection
  (grpc.reflection.v1 and v1alpha, from the default descriptor pool:
  Debian ships no grpcio-reflection);
- /healthz (liveness: up while the process runs, also while draining),
  /readyz (mirrors health) and /metrics on $METRICS_PORT (default 9090;
  -1 disables); /metrics has the Go runtime's series, names and labels
  (grpc_server_started_total, grpc_server_handled_total,
  grpc_server_handling_seconds, grpc_server_in_flight), so dashboards,
  `kuberpc status` and the autoscaling adapter see every replica alike;
- per-call ORCA load reports in the trailers when ORCA_PER_CALL is true
  (CPU utilisation, RPS, EPS and in_flight, as the Go runtime sends);
- settings from the environment as the Go runtime reads them: PORT,
  METRICS_PORT, DRAIN_DELAY and DRAIN_TIMEOUT as Go durations ("5s",
  "500ms", "1m30s") or plain seconds, ORCA_PER_CALL; a bad one exits
  naming it; once serving, it prints "NAME listening on :PORT, metrics on
  :PORT" with the ports bound (0 asks for a free one);
- the drain on SIGTERM or SIGINT: health NOT_SERVING at once, keep serving
  DRAIN_DELAY, then end the health Watch streams (they would hold the
  graceful stop to its end) and stop gracefully within DRAIN_TIMEOUT,
  which cancels what still runs; the process exits with status 0 at most
  one second later even if a handler ignores the cancellation. A second
  SIGTERM or SIGINT during the drain cancels what still runs and exits
  with status 1 within a second.

Run with Debian's /usr/bin/python3 (python3-grpcio).
"""

import http.server
import math
import os
import re
import signal
import struct
import sys
import threading
import time
from concurrent import futures

import grpc

import health_pb2
import health_pb2_grpc
import reflection_pb2
from google.protobuf import descriptor_pool

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)")


# MAX_DURATION bounds every duration setting: 2562047h, the whole hours of
# Go's longest duration (the Go runtime's bound), which time.sleep and
# threading's timeouts (TIMEOUT_MAX) still take.
MAX_DURATION = 2562047 * 3600.0


def parse_duration(raw):
    """Seconds in a Go duration ("1m30s", "250ms") or a plain number."""
    raw = raw.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    if raw in ("", "+", "-"):
        raise ValueError(raw)
    sign = -1.0 if raw.startswith("-") else 1.0
    rest = raw.lstrip("+-")
    total, pos = 0.0, 0
    while pos < len(rest):
        m = _PART.match(rest, pos)
        if not m:
            raise ValueError(raw)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def env_duration(name, default):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        v = parse_duration(raw)
    except ValueError:
        v = math.nan
    if math.isnan(v) or v == -math.inf:  # inf is refused below, as too long
        sys.exit("invalid %s %r: must be a duration such as 500ms, 10s or 1m" % (name, raw))
    if v < 0:
        sys.exit("invalid %s %r: must not be negative" % (name, raw))
    if v > MAX_DURATION:
        sys.exit("invalid %s %r: must be at most 2562047h (Go's longest duration, in whole hours)" % (name, raw))
    return v


def env_port(name, default, allow_off=False):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        sys.exit("invalid %s %r: must be a whole number" % (name, raw))
    if allow_off and v == -1:
        return v
    if not 0 <= v <= 65535:
        sys.exit("invalid %s %d: must be a port number in 1-65535, or 0 for a free port" % (name, v))
    return v


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

    def serving(self, service=""):
        with self._cond:
            return self._status.get(service) == health_pb2.HealthCheckResponse.SERVING

    def shutdown(self):
        """Every service NOT_SERVING, for good."""
        with self._cond:
            for s in self._status:
                self._status[s] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._cond.notify_all()

    def stop_watches(self):
        """End every Watch stream, so that they do not hold the stop."""
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


# The Go runtime's histogram buckets (internal/rpcmetrics.DefaultBuckets).
_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)


def _code_name(code):
    """grpc.StatusCode.INVALID_ARGUMENT -> "InvalidArgument", as Go names codes."""
    if code is None or code == grpc.StatusCode.OK:
        return "OK"
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"  # Go's spelling
    return "".join(part.capitalize() for part in code.name.split("_"))


def _fixed64(field, value):
    return bytes([field << 3 | 1]) + struct.pack("<d", value)


class Metrics:
    """Per-method RPC metrics with the Go runtime's names and labels."""

    def __init__(self):
        self._lock = threading.Lock()
        self._started = {}
        self._handled = {}
        self._in_flight = {}
        self._hist = {}
        self._total_in_flight = 0
        self._total = self._errors = self._prev_total = self._prev_errors = 0
        self._cpu = self._rps = self._eps = 0.0

    def start(self, key):
        with self._lock:
            self._started[key] = self._started.get(key, 0) + 1
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            self._total_in_flight += 1

    def in_flight(self):
        """RPCs in flight, all methods."""
        with self._lock:
            return self._total_in_flight

    def sample(self, cpu, wall):
        """Updates the load the ORCA reports carry; called once a second."""
        with self._lock:
            self._cpu = cpu
            self._rps = (self._total - self._prev_total) / wall
            self._eps = (self._errors - self._prev_errors) / wall
            self._prev_total, self._prev_errors = self._total, self._errors

    def orca_report(self):
        """An xds.data.orca.v3.OrcaLoadReport, serialized."""
        with self._lock:
            entry = b"\x0a\x09in_flight" + _fixed64(2, float(self._total_in_flight))
            return (_fixed64(1, self._cpu) + _fixed64(6, self._rps) + _fixed64(7, self._eps)
                    + bytes([8 << 3 | 2, len(entry)]) + entry)

    def done(self, key, code, seconds):
        with self._lock:
            self._in_flight[key] -= 1
            self._total_in_flight -= 1
            self._total += 1
            name = _code_name(code)
            if name != "OK":
                self._errors += 1
            hk = key + (name,)
            self._handled[hk] = self._handled.get(hk, 0) + 1
            h = self._hist.setdefault(key, [0] * len(_BUCKETS) + [0.0, 0])
            for i, b in enumerate(_BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def render(self):
        def labels(key, extra=()):
            names = ("grpc_service", "grpc_method", "grpc_type") + tuple(n for n, _ in extra)
            values = tuple(key) + tuple(v for _, v in extra)
            return ",".join('%s="%s"' % (n, v) for n, v in zip(names, values))

        out = []
        with self._lock:
            out.append("# HELP grpc_server_started_total RPCs started on the server.")
            out.append("# TYPE grpc_server_started_total counter")
            for k, v in sorted(self._started.items()):
                out.append("grpc_server_started_total{%s} %d" % (labels(k), v))
            out.append("# HELP grpc_server_handled_total RPCs completed on the server, by status code.")
            out.append("# TYPE grpc_server_handled_total counter")
            for k, v in sorted(self._handled.items()):
                out.append('grpc_server_handled_total{%s,grpc_code="%s"} %d' % (labels(k[:3]), k[3], v))
            out.append("# HELP grpc_server_handling_seconds Time from RPC start to completion on the server.")
            out.append("# TYPE grpc_server_handling_seconds histogram")
            for k, h in sorted(self._hist.items()):
                for i, b in enumerate(_BUCKETS):
                    out.append('grpc_server_handling_seconds_bucket{%s,le="%s"} %d' % (labels(k), repr(float(b)), h[i]))
                out.append('grpc_server_handling_seconds_bucket{%s,le="+Inf"} %d' % (labels(k), h[-1]))
                out.append("grpc_server_handling_seconds_sum{%s} %r" % (labels(k), h[-2]))
                out.append("grpc_server_handling_seconds_count{%s} %d" % (labels(k), h[-1]))
            out.append("# HELP grpc_server_in_flight RPCs in flight on the server.")
            out.append("# TYPE grpc_server_in_flight gauge")
            for k, v in sorted(self._in_flight.items()):
                out.append("grpc_server_in_flight{%s} %d" % (labels(k), v))
        return "\n".join(out) + "\n"


_MONITORING = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/xds.service.orca.v3.")


class _MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC in Metrics, whatever its shape."""

    def __init__(self, metrics, orca=False):
        self._m = metrics
        self._orca = orca

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        if details.method.startswith(_MONITORING):
            return handler  # monitoring, not load: the Go runtime counts none of it
        service, _, method = details.method.lstrip("/").rpartition("/")
        shape = {(False, False): "unary", (True, False): "client_stream",
                 (False, True): "server_stream", (True, True): "bidi_stream"}
        key = (service or "unknown", method, shape[(handler.request_streaming, handler.response_streaming)])
        m, orca = self._m, self._orca

        def finish(context, start, failed):
            code = context.code() if hasattr(context, "code") else None
            if failed and code is None:
                code = grpc.StatusCode.UNKNOWN
            if orca:
                md = tuple(context.trailing_metadata() or ())
                context.set_trailing_metadata(md + (("endpoint-load-metrics-bin", m.orca_report()),))
            m.done(key, code, time.monotonic() - start)

        def unary_response(behavior):
            def wrapped(request, context):
                m.start(key)
                start, failed = time.monotonic(), True
                try:
                    resp = behavior(request, context)
                    failed = False
                    return resp
                finally:
                    finish(context, start, failed)
            return wrapped

        def stream_response(behavior):
            def wrapped(request, context):
                m.start(key)
                start, failed = time.monotonic(), True
                try:
                    for resp in behavior(request, context):
                        yield resp
                    failed = False
                finally:
                    finish(context, start, failed)
            return wrapped

        if handler.response_streaming:
            inner = handler.unary_stream or handler.stream_stream
            wrap = stream_response(inner)
            make = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        else:
            inner = handler.unary_unary or handler.stream_unary
            wrap = unary_response(inner)
            make = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
        return make(wrap, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


_REFLECTION = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")


class _Reflection:
    """Server reflection over the default descriptor pool, where every
    generated _pb2 module registers its file."""

    def __init__(self, services):
        self._services = sorted(set(services) | {"grpc.health.v1.Health"} | set(_REFLECTION))
        self._pool = descriptor_pool.Default()

    def _answer(self, req):
        r = reflection_pb2
        kind = req.WhichOneof("message_request")
        try:
            if kind == "file_by_filename":
                fd = self._pool.FindFileByName(req.file_by_filename)
            elif kind == "file_containing_symbol":
                fd = self._pool.FindFileContainingSymbol(req.file_containing_symbol)
            elif kind == "file_containing_extension":
                msg = self._pool.FindMessageTypeByName(req.file_containing_extension.containing_type)
                fd = self._pool.FindExtensionByNumber(msg, req.file_containing_extension.extension_number).file
            elif kind == "all_extension_numbers_of_type":
                msg = self._pool.FindMessageTypeByName(req.all_extension_numbers_of_type)
                return r.ServerReflectionResponse(all_extension_numbers_response=r.ExtensionNumberResponse(
                    base_type_name=msg.full_name, extension_number=[e.number for e in self._pool.FindAllExtensions(msg)]))
            elif kind == "list_services":
                return r.ServerReflectionResponse(list_services_response=r.ListServiceResponse(
                    service=[r.ServiceResponse(name=n) for n in self._services]))
            else:
                return r.ServerReflectionResponse(error_response=r.ErrorResponse(
                    error_code=grpc.StatusCode.INVALID_ARGUMENT.value[0], error_message="empty reflection request"))
        except KeyError:
            return r.ServerReflectionResponse(error_response=r.ErrorResponse(
                error_code=grpc.StatusCode.NOT_FOUND.value[0], error_message="not found"))
        return r.ServerReflectionResponse(file_descriptor_response=r.FileDescriptorResponse(
            file_descriptor_proto=[fd.serialized_pb]))

    def info(self, request_iterator, context):
        for req in request_iterator:
            resp = self._answer(req)
            resp.valid_host = req.host
            resp.original_request.CopyFrom(req)
            yield resp

    def handlers(self):
        h = grpc.stream_stream_rpc_method_handler(
            self.info, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
        return tuple(grpc.method_handlers_generic_handler(svc, {"ServerReflectionInfo": h}) for svc in _REFLECTION)


METRICS = Metrics()


def env_bool(name):
    raw = os.environ.get(name, "")
    if raw in ("", "0", "f", "F", "false", "FALSE", "False"):
        return False
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    sys.exit("invalid %s %r: must be true or false" % (name, raw))


def _sample_load():
    cores = os.cpu_count() or 1
    prev_cpu, prev = time.process_time(), time.monotonic()
    while True:
        time.sleep(1)
        cpu, now = time.process_time(), time.monotonic()
        if now > prev:
            METRICS.sample(min(1.0, max(0.0, (cpu - prev_cpu) / (now - prev) / cores)), now - prev)
        prev_cpu, prev = cpu, now


def new_server(max_workers=32):
    """A grpc.server whose every RPC is counted in METRICS, with per-call
    ORCA load reports in the trailers when ORCA_PER_CALL is true."""
    threading.Thread(target=_sample_load, daemon=True).start()
    return grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                       interceptors=[_MetricsInterceptor(METRICS, env_bool("ORCA_PER_CALL"))])


def _http_server(port, health):
    class Handler(http.server.BaseHTTPRequestHandler):
        # A client that holds a connection without finishing its request
        # (slowloris) loses it after this long, and its thread.
        timeout = 5

        def do_GET(self):
            if self.path == "/healthz":
                code, body = 200, b"ok\n"
            elif self.path == "/readyz":
                ok = health.serving()
                code, body = (200, b"ok\n") if ok else (503, b"not serving\n")
            elif self.path == "/metrics":
                code, body = 200, METRICS.render().encode()
            else:
                code, body = 404, b"not found\n"
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # not 5: a burst of connections must not wait for SYN retries

        def handle_error(self, request, client_address):
            if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                return  # the client went away: nothing to report
            super().handle_error(request, client_address)

    srv = Server(("", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _stop_signal_pipe():
    """Catch SIGTERM and SIGINT; return a pipe they each write a byte to.

    The byte is written by the C-level handler in whichever thread the
    kernel delivers the signal to, so the main thread blocked reading the
    pipe wakes whichever that is. A Python handler setting a
    threading.Event did not always: a signal delivered to another thread
    (one of gRPC's) does not interrupt the main thread's Event.wait(), so
    the handler, which runs only in the main thread, never ran and the
    drain never began (a stack dump of the hung server showed the main
    thread still in Event.wait; 3 runs in 260 of
    TestForeignDrainNotHeldByWatch with two busy loops on two cores).
    """
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # not the default, which exits
    return r


def _stop_at_second_signal(stop_signal, server):
    """Wait for a second SIGTERM or SIGINT during the drain, then stop at
    once: cancel every call, give handlers half a second, and exit 1."""
    while not os.read(stop_signal, 1):
        pass
    print("second signal during the drain: stopping at once, cancelling what still runs", flush=True)
    server.stop(0)
    _handlers_left_after(0.5)
    _exit_now(1)


def _handlers_left_after(seconds):
    """Wait up to seconds for the handlers to return; return how many
    are still running."""
    until = time.monotonic() + seconds
    while METRICS.in_flight() > 0 and time.monotonic() < until:
        time.sleep(0.01)
    return METRICS.in_flight()


def _exit_now(code):
    """Exit with code, output flushed, without joining the executor's
    threads: a handler that ignores its cancellation would keep the
    interpreter up past the drain's bound."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(server, health, services, name="server"):
    """Serve server (with health registered) until SIGTERM, then drain.

    services are the full names to mark SERVING (the overall "" too).
    """
    port = env_port("PORT", 50051)
    metrics_port = env_port("METRICS_PORT", 9090, allow_off=True)
    delay = env_duration("DRAIN_DELAY", 5.0)
    timeout = env_duration("DRAIN_TIMEOUT", 20.0)
    stop_signal = _stop_signal_pipe()
    server.add_generic_rpc_handlers(_Reflection(services).handlers())
    bound = server.add_insecure_port("[::]:%d" % port)
    if bound == 0:
        sys.exit("listen on PORT %d failed" % port)
    http_srv = None
    if metrics_port >= 0:
        try:
            http_srv = _http_server(metrics_port, health)
        except OSError as e:
            sys.exit("listen on METRICS_PORT %d failed: %s" % (metrics_port, e))
    server.start()
    for svc in ("",) + tuple(services):
        health.set(svc, health_pb2.HealthCheckResponse.SERVING)
    # The ports bound (0 asks for a free one): "NAME listening on :P" and,
    # when /metrics is served, ", metrics on :M".
    metrics_on = ", metrics on :%d" % http_srv.server_address[1] if http_srv else ""
    print("%s listening on :%d%s" % (name, bound, metrics_on), flush=True)

    while not os.read(stop_signal, 1):
        pass
    print("draining: health NOT_SERVING", flush=True)
    threading.Thread(target=_stop_at_second_signal, args=(stop_signal, server), daemon=True).start()
    health.shutdown()
    threading.Event().wait(delay)
    health.stop_watches()
    server.stop(timeout).wait()
    if http_srv is not None:
        http_srv.shutdown()
    left = _handlers_left_after(1.0)
    if left:
        print("stopped: %d handlers still running 1s after DRAIN_TIMEOUT; exiting" % left, flush=True)
    else:
        print("stopped", flush=True)
    _exit_now(0)
