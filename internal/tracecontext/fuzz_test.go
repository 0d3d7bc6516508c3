package tracecontext

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"
)

// FuzzExtract: any traceparent, tracestate and baggage from a caller is
// taken or ignored, never a panic, and an extracted context injects again.
func FuzzExtract(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", "a=b")
	f.Add("ff-00000000000000000000000000000000-0000000000000000-00", "", "")
	f.Add("00-xyz", "=,=", "%%%;;;")
	f.Fuzz(func(t *testing.T, traceparent, tracestate, baggage string) {
		md := metadata.Pairs("traceparent", traceparent, "tracestate", tracestate, "baggage", baggage)
		ctx := Extract(metadata.NewIncomingContext(context.Background(), md))
		Inject(ctx)
	})
}
