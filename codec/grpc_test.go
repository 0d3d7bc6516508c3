package codec_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuberpc/kuberpc/codec"
	"github.com/kuberpc/kuberpc/examples/example"
)

// TestInterop: a server and a client with the codec talk to peers
// without it, in both directions, small and large messages alike.
func TestInterop(t *testing.T) {
	serve := func(opts ...grpc.ServerOption) string {
		s := grpc.NewServer(opts...)
		example.RegisterExampleServiceServer(s, example.Greeter{})
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(lis)
		t.Cleanup(s.Stop)
		return lis.Addr().String()
	}
	plain, fast := serve(), serve(grpc.ForceServerCodecV2(codec.New()))
	dial := func(addr string, opts ...grpc.DialOption) example.ExampleServiceClient {
		cc, err := grpc.NewClient("passthrough:///"+addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return example.NewExampleServiceClient(cc)
	}
	fastCall := grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.New()))
	for pair, c := range map[string]example.ExampleServiceClient{
		"fast client, plain server": dial(plain, fastCall),
		"plain client, fast server": dial(fast),
		"fast client, fast server":  dial(fast, fastCall),
	} {
		for _, n := range []int{3, 5000, 200 << 10} {
			name := strings.Repeat("n", n)
			r, err := c.SayHello(context.Background(), &example.Request{Name: name})
			if err != nil || r.GetMessage() != "Hello, "+name+"!" {
				t.Errorf("%s, %d bytes: %d-byte answer, %v", pair, n, len(r.GetMessage()), err)
			}
		}
	}
}
