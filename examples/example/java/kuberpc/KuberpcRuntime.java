package kuberpc;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import grpc.health.v1.HealthGrpc;
import grpc.health.v1.HealthOuterClass.HealthCheckRequest;
import grpc.health.v1.HealthOuterClass.HealthCheckResponse;
import grpc.health.v1.HealthOuterClass.HealthCheckResponse.ServingStatus;
import grpc.reflection.v1.Reflection.ErrorResponse;
import grpc.reflection.v1.Reflection.ExtensionNumberResponse;
import grpc.reflection.v1.Reflection.FileDescriptorResponse;
import grpc.reflection.v1.Reflection.ListServiceResponse;
import grpc.reflection.v1.Reflection.ServerReflectionRequest;
import grpc.reflection.v1.Reflection.ServerReflectionResponse;
import grpc.reflection.v1.Reflection.ServiceResponse;
import grpc.reflection.v1.ServerReflectionGrpc;
import com.google.protobuf.Descriptors.Descriptor;
import com.google.protobuf.Descriptors.EnumDescriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Descriptors.FileDescriptor;
import com.google.protobuf.Descriptors.ServiceDescriptor;
import io.grpc.ServerMethodDefinition;
import io.grpc.ServerServiceDefinition;
import io.grpc.protobuf.ProtoFileDescriptorSupplier;
import io.grpc.BindableService;
import io.grpc.ForwardingServerCall;
import io.grpc.ForwardingServerCallListener;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Server;
import io.grpc.ServerBuilder;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * kuberpc's runtime contract for Java gRPC servers.
 *
 * <p>One implementation, shared by the reference example server and every service {@code kuberpc
 * new --lang java} scaffolds (which gets a copy):
 *
 * <ul>
 *   <li>grpc.health.v1 (Check and Watch, overall and per service) and server reflection;
 *   <li>/healthz (liveness: up while the process runs, also while draining), /readyz (mirrors
 *       health) and /metrics on $METRICS_PORT (default 9090; -1 disables), with the Go runtime's
 *       series, names and labels (grpc_server_started_total, grpc_server_handled_total,
 *       grpc_server_handling_seconds, grpc_server_in_flight);
 *   <li>per-call ORCA load reports in the trailers when ORCA_PER_CALL is true (CPU utilisation,
 *       RPS, EPS and in_flight, as the Go runtime sends);
 *   <li>settings from the environment as the Go runtime reads them: PORT, METRICS_PORT,
 *       DRAIN_DELAY and DRAIN_TIMEOUT as Go durations ("5s", "500ms", "1m30s") or plain seconds,
 *       ORCA_PER_CALL; a bad one exits with status 2 naming it; once serving, it prints "NAME
 *       listening on :PORT, metrics on :PORT" with the ports bound (0 asks for a free one);
 *   <li>the drain on SIGTERM or SIGINT: health NOT_SERVING at once, keep serving DRAIN_DELAY, then
 *       end the health Watch streams and stop gracefully within DRAIN_TIMEOUT, then cancel what
 *       still runs; the process exits with status 0 at most one second later even if a handler
 *       ignores the cancellation, naming how many were left. A second SIGTERM or SIGINT during the
 *       drain cancels what still runs and exits with status 1 within a second.
 * </ul>
 *
 * <p>Server reflection (grpc.reflection.v1 and v1alpha) is its own, from the services' generated
 * descriptors: the Java gRPC Debian ships (1.41) has no grpc-services. Build with javac against
 * Debian's jars (see build.sh beside it).
 */
public final class KuberpcRuntime {
  private KuberpcRuntime() {}

  /** The runtime's settings, read from the environment. */
  public static final class Settings {
    public int port = 50051;
    public int metricsPort = 9090; // -1: no metrics server
    public double drainDelay = 5; // seconds
    public double drainTimeout = 20;
    public boolean orcaPerCall = false;
  }

  private static final Pattern PART = Pattern.compile("(\\d+(?:\\.\\d*)?|\\.\\d+)(ns|us|\u00b5s|ms|s|m|h)");

  /** Seconds in a Go duration ("1m30s", "250ms") or a plain number; throws on anything else. */
  public static double parseDuration(String raw) {
    String s = raw.trim();
    if (s.matches("[+-]?(\\d+(\\.\\d*)?|\\.\\d+)([eE][+-]?\\d+)?")) {
      return Double.parseDouble(s);
    }
    double sign = 1;
    if (s.startsWith("-") || s.startsWith("+")) {
      sign = s.startsWith("-") ? -1 : 1;
      s = s.substring(1);
    }
    if (s.isEmpty()) {
      throw new IllegalArgumentException(raw);
    }
    double total = 0;
    Matcher m = PART.matcher(s);
    int pos = 0;
    while (pos < s.length()) {
      if (!m.find(pos) || m.start() != pos) {
        throw new IllegalArgumentException(raw);
      }
      double unit;
      switch (m.group(2)) {
        case "ns": unit = 1e-9; break;
        case "us": case "\u00b5s": unit = 1e-6; break;
        case "ms": unit = 1e-3; break;
        case "s": unit = 1; break;
        case "m": unit = 60; break;
        default: unit = 3600;
      }
      total += Double.parseDouble(m.group(1)) * unit;
      pos = m.end();
    }
    return sign * total;
  }

  private static void fail(String msg) {
    System.err.println(msg);
    System.err.flush();
    Runtime.getRuntime().halt(2);
  }

  private static double envDuration(String name, double def) {
    String raw = System.getenv(name);
    if (raw == null || raw.isEmpty()) {
      return def;
    }
    double v = Double.NaN;
    try {
      v = parseDuration(raw);
    } catch (IllegalArgumentException e) {
      // v stays NaN
    }
    if (Double.isNaN(v)) {
      fail("invalid " + name + " '" + raw + "': must be a duration such as 500ms, 10s or 1m");
    }
    if (v < 0) {
      fail("invalid " + name + " '" + raw + "': must not be negative");
    }
    // 2562047h, the whole hours of Go's longest duration (the Go runtime's
    // bound).
    if (v > 2562047.0 * 3600) {
      fail("invalid " + name + " '" + raw + "': must be at most 2562047h (Go's longest duration, in whole hours)");
    }
    return v;
  }

  private static int envPort(String name, int def, boolean allowOff) {
    String raw = System.getenv(name);
    if (raw == null || raw.isEmpty()) {
      return def;
    }
    int v = 0;
    try {
      v = Integer.parseInt(raw);
    } catch (NumberFormatException e) {
      fail("invalid " + name + " '" + raw + "': must be a whole number");
    }
    if (allowOff && v == -1) {
      return v;
    }
    if (v < 0 || v > 65535) {
      fail("invalid " + name + " " + raw + ": must be a port number in 1-65535, or 0 for a free port");
    }
    return v;
  }

  private static boolean envBool(String name) {
    String raw = System.getenv(name);
    if (raw == null || raw.isEmpty()) {
      return false;
    }
    switch (raw) { // Go's strconv.ParseBool
      case "1": case "t": case "T": case "true": case "TRUE": case "True": return true;
      case "0": case "f": case "F": case "false": case "FALSE": case "False": return false;
      default:
        fail("invalid " + name + " '" + raw + "': must be true or false");
        return false;
    }
  }

  /** Reads Settings from the environment; a bad value exits with status 2 naming it. */
  public static Settings loadSettings() {
    Settings s = new Settings();
    s.port = envPort("PORT", 50051, false);
    s.metricsPort = envPort("METRICS_PORT", 9090, true);
    s.drainDelay = envDuration("DRAIN_DELAY", 5);
    s.drainTimeout = envDuration("DRAIN_TIMEOUT", 20);
    s.orcaPerCall = envBool("ORCA_PER_CALL");
    return s;
  }

  /** grpc.health.v1 with Check and Watch, per service. */
  public static final class Health extends HealthGrpc.HealthImplBase {
    private final Map<String, ServingStatus> status = new HashMap<>();
    private final List<ServerCallStreamObserver<HealthCheckResponse>> watchers = new ArrayList<>();
    private final Map<ServerCallStreamObserver<HealthCheckResponse>, String> watched = new HashMap<>();
    private final Map<ServerCallStreamObserver<HealthCheckResponse>, ServingStatus> sent = new HashMap<>();
    private boolean stopped;

    /** Sets the status of service ("" is the server as a whole). */
    public synchronized void set(String service, ServingStatus s) {
      status.put(service, s);
      notifyWatchers();
    }

    /** Reports whether the server as a whole is SERVING. */
    public synchronized boolean serving() {
      return status.get("") == ServingStatus.SERVING;
    }

    /** Every service NOT_SERVING, for good. */
    public synchronized void shutdown() {
      status.replaceAll((k, v) -> ServingStatus.NOT_SERVING);
      notifyWatchers();
    }

    /** Ends every Watch stream, so that they do not hold the stop. */
    public synchronized void stopWatches() {
      stopped = true;
      for (ServerCallStreamObserver<HealthCheckResponse> w : watchers) {
        try {
          w.onCompleted();
        } catch (RuntimeException e) {
          // already cancelled
        }
      }
      watchers.clear();
    }

    private void notifyWatchers() {
      for (ServerCallStreamObserver<HealthCheckResponse> w : new ArrayList<>(watchers)) {
        send(w);
      }
    }

    private void send(ServerCallStreamObserver<HealthCheckResponse> w) {
      ServingStatus cur = status.getOrDefault(watched.get(w), ServingStatus.SERVICE_UNKNOWN);
      if (cur == sent.get(w) || w.isCancelled()) {
        return;
      }
      sent.put(w, cur);
      w.onNext(HealthCheckResponse.newBuilder().setStatus(cur).build());
    }

    @Override
    public synchronized void check(HealthCheckRequest req, StreamObserver<HealthCheckResponse> out) {
      ServingStatus s = status.get(req.getService());
      if (s == null) {
        out.onError(Status.NOT_FOUND.withDescription("unknown service '" + req.getService() + "'").asRuntimeException());
        return;
      }
      out.onNext(HealthCheckResponse.newBuilder().setStatus(s).build());
      out.onCompleted();
    }

    @Override
    public synchronized void watch(HealthCheckRequest req, StreamObserver<HealthCheckResponse> out) {
      ServerCallStreamObserver<HealthCheckResponse> w = (ServerCallStreamObserver<HealthCheckResponse>) out;
      if (stopped) {
        w.onCompleted();
        return;
      }
      w.setOnCancelHandler(() -> {
        synchronized (Health.this) {
          watchers.remove(w);
          watched.remove(w);
          sent.remove(w);
        }
      });
      watchers.add(w);
      watched.put(w, req.getService());
      send(w);
    }
  }

  /** Server reflection over the generated descriptors of the services served. */
  static final class Reflection extends ServerReflectionGrpc.ServerReflectionImplBase {
    private final Map<String, FileDescriptor> files = new HashMap<>();
    private final Map<String, FileDescriptor> symbols = new HashMap<>();
    private final Map<String, Map<Integer, FileDescriptor>> extensions = new HashMap<>();
    private final List<String> services = new ArrayList<>();

    Reflection(List<ServerServiceDefinition> defs) {
      for (ServerServiceDefinition d : defs) {
        services.add(d.getServiceDescriptor().getName());
        Object schema = d.getServiceDescriptor().getSchemaDescriptor();
        if (schema instanceof ProtoFileDescriptorSupplier) {
          add(((ProtoFileDescriptorSupplier) schema).getFileDescriptor());
        }
      }
      services.add(ServerReflectionGrpc.SERVICE_NAME);
      services.add("grpc.reflection.v1alpha.ServerReflection");
      java.util.Collections.sort(services);
    }

    private void add(FileDescriptor fd) {
      if (files.putIfAbsent(fd.getName(), fd) != null) {
        return;
      }
      for (FileDescriptor dep : fd.getDependencies()) {
        add(dep);
      }
      for (Descriptor m : fd.getMessageTypes()) {
        addMessage(fd, m);
      }
      for (EnumDescriptor e : fd.getEnumTypes()) {
        symbols.put(e.getFullName(), fd);
      }
      for (ServiceDescriptor s : fd.getServices()) {
        symbols.put(s.getFullName(), fd);
        s.getMethods().forEach(m -> symbols.put(m.getFullName(), fd));
      }
      addExtensions(fd, fd.getExtensions());
    }

    private void addMessage(FileDescriptor fd, Descriptor m) {
      symbols.put(m.getFullName(), fd);
      m.getNestedTypes().forEach(n -> addMessage(fd, n));
      m.getEnumTypes().forEach(e -> symbols.put(e.getFullName(), fd));
      addExtensions(fd, m.getExtensions());
    }

    private void addExtensions(FileDescriptor fd, List<FieldDescriptor> exts) {
      for (FieldDescriptor x : exts) {
        symbols.put(x.getFullName(), fd);
        extensions.computeIfAbsent(x.getContainingType().getFullName(), k -> new TreeMap<>()).put(x.getNumber(), fd);
      }
    }

    private static ServerReflectionResponse file(FileDescriptor fd) {
      return ServerReflectionResponse.newBuilder().setFileDescriptorResponse(
          FileDescriptorResponse.newBuilder().addFileDescriptorProto(fd.toProto().toByteString())).build();
    }

    private static ServerReflectionResponse error(Status.Code code, String msg) {
      return ServerReflectionResponse.newBuilder().setErrorResponse(
          ErrorResponse.newBuilder().setErrorCode(code.value()).setErrorMessage(msg)).build();
    }

    private ServerReflectionResponse answer(ServerReflectionRequest req) {
      FileDescriptor fd;
      switch (req.getMessageRequestCase()) {
        case FILE_BY_FILENAME:
          fd = files.get(req.getFileByFilename());
          return fd == null ? error(Status.Code.NOT_FOUND, "file not found: " + req.getFileByFilename()) : file(fd);
        case FILE_CONTAINING_SYMBOL:
          fd = symbols.get(req.getFileContainingSymbol());
          return fd == null ? error(Status.Code.NOT_FOUND, "symbol not found: " + req.getFileContainingSymbol()) : file(fd);
        case FILE_CONTAINING_EXTENSION:
          fd = extensions.getOrDefault(req.getFileContainingExtension().getContainingType(), Map.of())
              .get(req.getFileContainingExtension().getExtensionNumber());
          return fd == null ? error(Status.Code.NOT_FOUND, "extension not found") : file(fd);
        case ALL_EXTENSION_NUMBERS_OF_TYPE:
          String type = req.getAllExtensionNumbersOfType();
          if (!symbols.containsKey(type)) {
            return error(Status.Code.NOT_FOUND, "type not found: " + type);
          }
          return ServerReflectionResponse.newBuilder().setAllExtensionNumbersResponse(
              ExtensionNumberResponse.newBuilder().setBaseTypeName(type)
                  .addAllExtensionNumber(extensions.getOrDefault(type, Map.of()).keySet())).build();
        case LIST_SERVICES:
          ListServiceResponse.Builder l = ListServiceResponse.newBuilder();
          services.forEach(n -> l.addService(ServiceResponse.newBuilder().setName(n)));
          return ServerReflectionResponse.newBuilder().setListServicesResponse(l).build();
        default:
          return error(Status.Code.INVALID_ARGUMENT, "empty reflection request");
      }
    }

    @Override
    public StreamObserver<ServerReflectionRequest> serverReflectionInfo(StreamObserver<ServerReflectionResponse> out) {
      return new StreamObserver<ServerReflectionRequest>() {
        @Override
        public void onNext(ServerReflectionRequest req) {
          out.onNext(answer(req).toBuilder().setValidHost(req.getHost()).setOriginalRequest(req).build());
        }

        @Override
        public void onError(Throwable t) {}

        @Override
        public void onCompleted() {
          out.onCompleted();
        }
      };
    }

    /** The same service under v1alpha's name, for older clients. */
    ServerServiceDefinition v1alpha() {
      ServerServiceDefinition.Builder b = ServerServiceDefinition.builder("grpc.reflection.v1alpha.ServerReflection");
      for (ServerMethodDefinition<?, ?> m : bindService().getMethods()) {
        renamed(b, m);
      }
      return b.build();
    }

    private static <Q, R> void renamed(ServerServiceDefinition.Builder b, ServerMethodDefinition<Q, R> m) {
      MethodDescriptor<Q, R> md = m.getMethodDescriptor();
      b.addMethod(md.toBuilder().setFullMethodName(MethodDescriptor.generateFullMethodName(
          "grpc.reflection.v1alpha.ServerReflection", md.getBareMethodName())).build(), m.getServerCallHandler());
    }
  }

  // The Go runtime's histogram buckets (internal/rpcmetrics.DefaultBuckets).
  private static final double[] BUCKETS = {.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
  private static final String[] BUCKET_LABELS = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"
  };

  // The status codes as Go names them (codes.Code.String()).
  private static final String[] CODE_NAMES = {
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
    "Internal", "Unavailable", "DataLoss", "Unauthenticated"
  };

  private static String typeName(MethodDescriptor.MethodType t) {
    switch (t) {
      case CLIENT_STREAMING: return "client_stream";
      case SERVER_STREAMING: return "server_stream";
      case BIDI_STREAMING: return "bidi_stream";
      default: return "unary";
    }
  }

  /** Per-method RPC metrics with the Go runtime's names and labels, and the ORCA load. */
  public static final class Metrics {
    private static final class Hist {
      final long[] counts = new long[BUCKETS.length];
      double sum;
      long count;
    }

    private final TreeMap<String, Long> started = new TreeMap<>();
    private final TreeMap<String, Long> inFlight = new TreeMap<>();
    private final TreeMap<String, Long> handled = new TreeMap<>();
    private final TreeMap<String, Hist> hist = new TreeMap<>();
    private long totalInFlight, total, errors, prevTotal, prevErrors;
    private double cpuUtil, rps, eps;

    synchronized void start(String labels) {
      started.merge(labels, 1L, Long::sum);
      inFlight.merge(labels, 1L, Long::sum);
      totalInFlight++;
    }

    synchronized void done(String labels, int code, double seconds) {
      inFlight.merge(labels, -1L, Long::sum);
      totalInFlight--;
      handled.merge(labels + ",grpc_code=\"" + CODE_NAMES[code] + "\"", 1L, Long::sum);
      Hist h = hist.computeIfAbsent(labels, k -> new Hist());
      for (int i = 0; i < BUCKETS.length; i++) {
        if (seconds <= BUCKETS[i]) {
          h.counts[i]++;
        }
      }
      h.sum += seconds;
      h.count++;
      total++;
      if (code != 0) {
        errors++;
      }
    }

    /** RPCs in flight, all methods. */
    public synchronized long inFlight() {
      return totalInFlight;
    }

    /** The Prometheus text exposition of the metrics. */
    public synchronized String render() {
      StringBuilder o = new StringBuilder();
      o.append("# HELP grpc_server_started_total RPCs started on the server.\n# TYPE grpc_server_started_total counter\n");
      started.forEach((k, v) -> o.append("grpc_server_started_total{").append(k).append("} ").append(v).append('\n'));
      o.append("# HELP grpc_server_handled_total RPCs completed on the server, by status code.\n");
      o.append("# TYPE grpc_server_handled_total counter\n");
      handled.forEach((k, v) -> o.append("grpc_server_handled_total{").append(k).append("} ").append(v).append('\n'));
      o.append("# HELP grpc_server_handling_seconds Time from RPC start to completion on the server.\n");
      o.append("# TYPE grpc_server_handling_seconds histogram\n");
      hist.forEach((k, h) -> {
        for (int i = 0; i < BUCKETS.length; i++) {
          o.append("grpc_server_handling_seconds_bucket{").append(k).append(",le=\"").append(BUCKET_LABELS[i])
              .append("\"} ").append(h.counts[i]).append('\n');
        }
        o.append("grpc_server_handling_seconds_bucket{").append(k).append(",le=\"+Inf\"} ").append(h.count).append('\n');
        o.append("grpc_server_handling_seconds_sum{").append(k).append("} ").append(h.sum).append('\n');
        o.append("grpc_server_handling_seconds_count{").append(k).append("} ").append(h.count).append('\n');
      });
      o.append("# HELP grpc_server_in_flight RPCs in flight on the server.\n# TYPE grpc_server_in_flight gauge\n");
      inFlight.forEach((k, v) -> o.append("grpc_server_in_flight{").append(k).append("} ").append(v).append('\n'));
      return o.toString();
    }

    synchronized void sample(double cpu, double wall) {
      cpuUtil = cpu;
      rps = (total - prevTotal) / wall;
      eps = (errors - prevErrors) / wall;
      prevTotal = total;
      prevErrors = errors;
    }

    /** An xds.data.orca.v3.OrcaLoadReport, serialized. */
    synchronized byte[] orcaReport() {
      byte[] name = "in_flight".getBytes(StandardCharsets.US_ASCII);
      ByteBuffer b = ByteBuffer.allocate(3 * 9 + 2 + 2 + name.length + 9).order(ByteOrder.LITTLE_ENDIAN);
      b.put((byte) (1 << 3 | 1)).putDouble(cpuUtil); // cpu_utilization
      b.put((byte) (6 << 3 | 1)).putDouble(rps); // rps_fractional
      b.put((byte) (7 << 3 | 1)).putDouble(eps); // eps
      b.put((byte) (8 << 3 | 2)).put((byte) (2 + name.length + 9)); // named_metrics entry
      b.put((byte) (1 << 3 | 2)).put((byte) name.length).put(name);
      b.put((byte) (2 << 3 | 1)).putDouble(totalInFlight);
      return b.array();
    }
  }

  private static final Metadata.Key<byte[]> ORCA_KEY =
      Metadata.Key.of("endpoint-load-metrics-bin", Metadata.BINARY_BYTE_MARSHALLER);

  /** Counts every RPC in Metrics, whatever its shape; monitoring calls are not load. */
  static final class MetricsInterceptor implements ServerInterceptor {
    private final Metrics m;
    private final boolean orca;

    MetricsInterceptor(Metrics m, boolean orca) {
      this.m = m;
      this.orca = orca;
    }

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
      MethodDescriptor<Q, R> md = call.getMethodDescriptor();
      String full = md.getFullMethodName();
      if (full.startsWith("grpc.health.v1.") || full.startsWith("grpc.reflection.") || full.startsWith("xds.service.orca.")) {
        return next.startCall(call, headers);
      }
      String svc = md.getServiceName() == null ? "unknown" : md.getServiceName();
      String labels = "grpc_service=\"" + svc + "\",grpc_method=\"" + MethodDescriptor.extractBareMethodName(full)
          + "\",grpc_type=\"" + typeName(md.getType()) + "\"";
      long start = System.nanoTime();
      AtomicBoolean done = new AtomicBoolean();
      m.start(labels);
      ServerCall<Q, R> counted = new ForwardingServerCall.SimpleForwardingServerCall<Q, R>(call) {
        @Override
        public void close(Status status, Metadata trailers) {
          if (done.compareAndSet(false, true)) {
            if (orca) {
              trailers.put(ORCA_KEY, m.orcaReport());
            }
            m.done(labels, status.getCode().value(), (System.nanoTime() - start) / 1e9);
          }
          super.close(status, trailers);
        }
      };
      ServerCall.Listener<Q> l = next.startCall(counted, headers);
      return new ForwardingServerCallListener.SimpleForwardingServerCallListener<Q>(l) {
        @Override
        public void onCancel() {
          if (done.compareAndSet(false, true)) {
            m.done(labels, Status.Code.CANCELLED.value(), (System.nanoTime() - start) / 1e9);
          }
          super.onCancel();
        }
      };
    }
  }

  private static void respond(HttpExchange ex, int code, String body) throws IOException {
    byte[] b = body.getBytes(StandardCharsets.UTF_8);
    ex.getResponseHeaders().set("Content-Type", "text/plain; version=0.0.4");
    ex.sendResponseHeaders(code, b.length);
    try (OutputStream os = ex.getResponseBody()) {
      os.write(b);
    }
  }

  /** The process's CPU time in seconds. */
  private static double cpuSeconds() {
    return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime() / 1e9;
  }

  /**
   * Serves services until SIGTERM or SIGINT, then drains, and exits the process.
   *
   * @param services the services to serve (health is added)
   * @param names their full names, to mark SERVING (the overall "" too)
   * @param name what the server is, for its log lines
   */
  public static void run(List<BindableService> services, List<String> names, String name) throws Exception {
    Settings st = loadSettings();
    Metrics metrics = new Metrics();
    Health health = new Health();
    MetricsInterceptor icpt = new MetricsInterceptor(metrics, st.orcaPerCall);
    ServerBuilder<?> b = ServerBuilder.forPort(st.port);
    b.addService(health);
    List<ServerServiceDefinition> defs = new ArrayList<>();
    defs.add(health.bindService());
    for (BindableService s : services) {
      ServerServiceDefinition d = s.bindService();
      defs.add(d);
      b.addService(ServerInterceptors.intercept(d, icpt));
    }
    Reflection reflection = new Reflection(defs);
    b.addService(reflection);
    b.addService(reflection.v1alpha());
    Server server;
    try {
      server = b.build().start();
    } catch (IOException e) {
      fail("listen on PORT " + st.port + " failed: " + e.getMessage());
      return;
    }
    health.set("", ServingStatus.SERVING);
    for (String n : names) {
      health.set(n, ServingStatus.SERVING);
    }
    HttpServer http = null;
    if (st.metricsPort >= 0) {
      // The JDK's server reads a request in an executor thread: a client
      // that holds a connection without finishing its request (slowloris)
      // holds a thread, which maxReqTime frees; a thread per request, so
      // that such clients cannot keep the kubelet's liveness probe out.
      System.setProperty("sun.net.httpserver.maxReqTime", "5");
      try {
        http = HttpServer.create(new InetSocketAddress(st.metricsPort), 64);
      } catch (IOException e) {
        fail("listen on METRICS_PORT " + st.metricsPort + " failed: " + e.getMessage());
      }
      http.setExecutor(Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r, "metrics-http");
        t.setDaemon(true);
        return t;
      }));
      http.createContext("/", ex -> {
        String path = ex.getRequestURI().getPath();
        if (!"GET".equals(ex.getRequestMethod())) {
          respond(ex, 405, "method not allowed\n");
        } else if (path.equals("/healthz")) {
          respond(ex, 200, "ok\n");
        } else if (path.equals("/readyz")) {
          if (health.serving()) {
            respond(ex, 200, "ok\n");
          } else {
            respond(ex, 503, "not serving\n");
          }
        } else if (path.equals("/metrics")) {
          respond(ex, 200, metrics.render());
        } else {
          respond(ex, 404, "not found\n");
        }
      });
      http.start();
    }
    Thread sampler = new Thread(() -> {
      int cores = Runtime.getRuntime().availableProcessors();
      double prevCpu = cpuSeconds();
      long prev = System.nanoTime();
      while (true) {
        try {
          Thread.sleep(1000);
        } catch (InterruptedException e) {
          return;
        }
        double cpu = cpuSeconds();
        long now = System.nanoTime();
        double wall = (now - prev) / 1e9;
        metrics.sample(Math.min(1, Math.max(0, (cpu - prevCpu) / wall / cores)), wall);
        prevCpu = cpu;
        prev = now;
      }
    }, "orca-sampler");
    sampler.setDaemon(true);
    sampler.start();
    // The ports bound (0 asks for a free one): "NAME listening on :P" and,
    // when /metrics is served, ", metrics on :M".
    String metricsOn = http == null ? "" : ", metrics on :" + http.getAddress().getPort();
    System.out.println(name + " listening on :" + server.getPort() + metricsOn);
    System.out.flush();

    // The JVM runs shutdown hooks on SIGTERM and SIGINT; this one drains
    // and then halts with status 0 (a JVM ended by a signal exits 143).
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        System.out.println("draining: health NOT_SERVING");
        System.out.flush();
        // The JVM's own handler would now ignore a second signal (its
        // exit waits for this hook): one stops the drain at once.
        sun.misc.SignalHandler again = sig -> {
          System.out.println("second signal during the drain: stopping at once, cancelling what still runs");
          System.out.flush();
          server.shutdownNow();
          try {
            server.awaitTermination(500, TimeUnit.MILLISECONDS);
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
          }
          Runtime.getRuntime().halt(1);
        };
        sun.misc.Signal.handle(new sun.misc.Signal("TERM"), again);
        sun.misc.Signal.handle(new sun.misc.Signal("INT"), again);
        health.shutdown();
        Thread.sleep((long) (st.drainDelay * 1000));
        health.stopWatches();
        server.shutdown();
        if (!server.awaitTermination((long) (st.drainTimeout * 1000), TimeUnit.MILLISECONDS)) {
          server.shutdownNow();
          if (!server.awaitTermination(1, TimeUnit.SECONDS)) {
            System.out.println("stopped: " + metrics.inFlight() + " handlers still running 1s after DRAIN_TIMEOUT; exiting");
            System.out.flush();
            Runtime.getRuntime().halt(0);
          }
        }
        System.out.println("stopped");
        System.out.flush();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      Runtime.getRuntime().halt(0);
    }, "drain"));
    server.awaitTermination(); // the drain ends it, then halts the JVM
  }
}
