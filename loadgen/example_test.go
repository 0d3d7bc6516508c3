package loadgen_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/loadgen"
)

// Run drives an open loop of unary calls, plus long-lived streams,
// through any connection, and counts every outcome; here, 100 calls a
// second for half a second and two streams against a server on loopback.
func ExampleRun() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	example.RegisterStreamServiceServer(srv, example.Greeter{})
	go srv.Serve(lis)
	defer srv.Stop()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	res, err := loadgen.Run(context.Background(), cc, loadgen.Options{Rate: 100, Duration: 500 * time.Millisecond, Streams: 2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("calls OK:", res.Codes[codes.OK], "failed:", res.Failed())
	fmt.Println("answered by:", res.Peers)
	fmt.Println("streams opened:", res.StreamsOpened, "hung:", res.HungStreams)
	// Output:
	// calls OK: 50 failed: 0
	// answered by: map[127.0.0.1:50]
	// streams opened: 2 hung: 0
}
