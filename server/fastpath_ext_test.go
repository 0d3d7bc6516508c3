package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// TestFastPathIsWireCompatible: the fast path's server answers clients
// without it, and its client calls servers without it, for messages on
// both sides of its codec's threshold.
func TestFastPathIsWireCompatible(t *testing.T) {
	t.Parallel()
	fast, plain := start(t, quickDrain(), server.WithFastPath()), start(t, quickDrain())
	fastClient := func(addr string) *grpc.ClientConn {
		cc, err := client.Dial("passthrough:///"+addr, client.WithFastPath(), client.WithRegistry(prometheus.NewRegistry()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	for pair, cc := range map[string]*grpc.ClientConn{
		"grpc-go client, fast server":  fast.cc,
		"fast client, plain server":    fastClient(plain.addr),
		"fast client, fast server":     fastClient(fast.addr),
		"grpc-go client, plain server": plain.cc,
	} {
		for _, n := range []int{3, 5000, 200 << 10} {
			name := strings.Repeat("n", n)
			r, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Id: 1, Name: name})
			if err != nil || r.GetMessage() != "Hello, "+name+"!" {
				t.Errorf("%s, %d-byte name: %d-byte answer, %v", pair, n, len(r.GetMessage()), err)
			}
		}
	}
}
