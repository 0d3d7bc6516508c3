package example;

import io.grpc.BindableService;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.util.List;
import kuberpc.KuberpcRuntime;

/**
 * The reference ExampleService (and StreamService) on Java gRPC.
 *
 * <p>It serves the same proto as the Go example, on the port in $PORT (default 50051), with
 * grpc.health.v1, /healthz, /readyz and /metrics on $METRICS_PORT, and drains on SIGTERM like the
 * kuberpc Go runtime (see kuberpc/KuberpcRuntime.java, which every scaffolded Java service shares).
 */
public final class ExampleServer {
  static final int MAX_GREETINGS = 10000;
  static final int MAX_COLLECTED = 64 << 10; // bytes of names CollectNames keeps per stream, as the Go server

  static String greeting(String name) {
    return "Hello, " + name + "!";
  }

  static final class Greeter extends ExampleServiceGrpc.ExampleServiceImplBase {
    @Override
    public void sayHello(Example.Request req, StreamObserver<Example.Response> out) {
      out.onNext(Example.Response.newBuilder().setMessage(greeting(req.getName())).build());
      out.onCompleted();
    }
  }

  static final class Streams extends StreamServiceGrpc.StreamServiceImplBase {
    @Override
    public void greetings(Example.Request req, StreamObserver<Example.Response> out) {
      int n = req.getId();
      if (n < 0 || n > MAX_GREETINGS) {
        out.onError(Status.INVALID_ARGUMENT
            .withDescription("id " + n + " out of range: Greetings sends 0-" + MAX_GREETINGS + " greetings")
            .asRuntimeException());
        return;
      }
      ServerCallStreamObserver<Example.Response> s = (ServerCallStreamObserver<Example.Response>) out;
      for (int i = 1; i <= n && !s.isCancelled(); i++) {
        out.onNext(Example.Response.newBuilder()
            .setMessage(greeting(req.getName()) + " (" + i + "/" + n + ")").build());
      }
      out.onCompleted();
    }

    @Override
    public StreamObserver<Example.Request> collectNames(StreamObserver<Example.Response> out) {
      return new StreamObserver<Example.Request>() {
        final StringBuilder names = new StringBuilder();
        int size;
        boolean failed;

        @Override
        public void onNext(Example.Request r) {
          if (failed) {
            return;
          }
          size += r.getNameBytes().size() + 2;
          if (size > MAX_COLLECTED) {
            failed = true;
            out.onError(Status.RESOURCE_EXHAUSTED
                .withDescription("CollectNames keeps at most " + MAX_COLLECTED + " bytes of names per stream")
                .asRuntimeException());
            return;
          }
          if (names.length() > 0) {
            names.append(", ");
          }
          names.append(r.getName());
        }

        @Override
        public void onError(Throwable t) {}

        @Override
        public void onCompleted() {
          if (!failed) {
            out.onNext(Example.Response.newBuilder().setMessage(greeting(names.toString())).build());
            out.onCompleted();
          }
        }
      };
    }

    @Override
    public StreamObserver<Example.Request> chat(StreamObserver<Example.Response> out) {
      return new StreamObserver<Example.Request>() {
        @Override
        public void onNext(Example.Request r) {
          out.onNext(Example.Response.newBuilder().setMessage(greeting(r.getName())).build());
        }

        @Override
        public void onError(Throwable t) {}

        @Override
        public void onCompleted() {
          out.onCompleted();
        }
      };
    }
  }

  public static void main(String[] args) throws Exception {
    KuberpcRuntime.run(List.<BindableService>of(new Greeter(), new Streams()),
        List.of("example.ExampleService", "example.StreamService"), "java example server");
  }
}
