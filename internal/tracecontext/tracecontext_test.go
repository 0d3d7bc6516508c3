package tracecontext

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

func TestInjectExtractRoundTrip(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	out := Inject(trace.ContextWithSpanContext(context.Background(), sc))
	md, _ := metadata.FromOutgoingContext(out)
	if got := md.Get("traceparent"); len(got) != 1 || got[0] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("traceparent = %v", got)
	}
	in := Extract(metadata.NewIncomingContext(context.Background(), md))
	if got := trace.SpanContextFromContext(in); got.TraceID() != tid || got.SpanID() != sid || !got.IsRemote() {
		t.Errorf("extracted %v; want the injected span context, remote", got)
	}
	// No trace context: nothing added, nothing allocated.
	plain := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x", "y"))
	if n := testing.AllocsPerRun(100, func() { Extract(plain) }); n != 0 {
		t.Errorf("Extract of an untraced call allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { Inject(context.Background()) }); n != 0 {
		t.Errorf("Inject without a span allocates %v times", n)
	}
}
