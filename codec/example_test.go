package codec_test

import (
	"fmt"

	"google.golang.org/grpc"

	"github.com/kuberpc/kuberpc/codec"
)

// The fast path installs the codec on one server or connection only;
// with plain grpc-go it is one option on each side.
func Example() {
	srv := grpc.NewServer(grpc.ForceServerCodecV2(codec.New()))
	defer srv.Stop()
	call := grpc.ForceCodecV2(codec.New()) // grpc.WithDefaultCallOptions(call) when dialling
	_ = call
	fmt.Println(codec.New().Name())
	// Output: proto
}
