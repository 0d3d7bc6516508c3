package example;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import java.util.concurrent.TimeUnit;

/**
 * Calls ExampleService.SayHello at ADDRESS (args[0], host:port) once per name in args[1..] and
 * prints each reply on its own line. Used by the interop and cluster tests.
 */
public final class ExampleClient {
  public static void main(String[] args) throws Exception {
    if (args.length < 2) {
      System.err.println("usage: client HOST:PORT NAME...");
      System.exit(2);
    }
    ManagedChannel ch = ManagedChannelBuilder.forTarget(args[0]).usePlaintext().build();
    try {
      ExampleServiceGrpc.ExampleServiceBlockingStub stub = ExampleServiceGrpc.newBlockingStub(ch);
      for (int i = 1; i < args.length; i++) {
        Example.Response r = stub.withDeadlineAfter(10, TimeUnit.SECONDS)
            .sayHello(Example.Request.newBuilder().setId(i - 1).setName(args[i]).build());
        System.out.println(r.getMessage());
      }
    } finally {
      ch.shutdownNow();
    }
  }
}
