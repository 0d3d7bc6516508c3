// Package tracecontext carries W3C trace context in gRPC metadata for the
// server and client runtimes, whatever the process's global OpenTelemetry
// propagator is. With tracing on, otelgrpc does it with Propagator; with
// tracing off, Extract and Inject keep a trace whole through a kuberpc
// process at the cost of a metadata lookup per call.
package tracecontext

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// Propagator is W3C trace context and baggage.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// carrier adapts gRPC metadata to a TextMapCarrier.
type carrier metadata.MD

func (m carrier) Get(key string) string {
	if v := metadata.MD(m).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m carrier) Set(key, value string) { metadata.MD(m).Set(key, value) }

func (m carrier) Keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Extract returns ctx with the caller's trace context from the incoming
// metadata, when it carries one.
func Extract(ctx context.Context) context.Context {
	// ValueFromIncomingContext does not copy the metadata, so an untraced
	// call costs no allocation here.
	if len(metadata.ValueFromIncomingContext(ctx, "traceparent")) == 0 {
		return ctx
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return Propagator.Extract(ctx, carrier(md))
}

// Inject returns ctx with its trace context added to the outgoing
// metadata, when it has one.
func Inject(ctx context.Context) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	Propagator.Inject(ctx, carrier(md))
	return metadata.NewOutgoingContext(ctx, md)
}
