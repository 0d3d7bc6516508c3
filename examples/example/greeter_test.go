package example_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/examples/example"
)

// TestCollectNamesIsBounded: streaming names past MaxCollected ends the
// stream with RESOURCE_EXHAUSTED instead of growing the server's memory.
func TestCollectNamesIsBounded(t *testing.T) {
	gs := grpc.NewServer()
	example.RegisterStreamServiceServer(gs, example.Greeter{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := example.NewStreamServiceClient(cc)

	small, err := c.CollectNames(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	small.Send(&example.Request{Name: "a"})
	small.Send(&example.Request{Name: "b"})
	if r, err := small.CloseAndRecv(); err != nil || r.GetMessage() != "Hello, a, b!" {
		t.Fatalf("CollectNames(a, b) = %v, %v", r, err)
	}

	big, err := c.CollectNames(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("n", 1<<10)
	for range 2 * example.MaxCollected / len(name) {
		if err := big.Send(&example.Request{Name: name}); err != nil {
			break // the server ended the stream
		}
	}
	if _, err := big.CloseAndRecv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("CollectNames past %d bytes = %v; want RESOURCE_EXHAUSTED", example.MaxCollected, err)
	}
}
