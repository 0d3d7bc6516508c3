package server

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// newOTLPTracerProvider exports spans over OTLP/gRPC to cfg.OTLPEndpoint.
// The exporter connects lazily, so a collector that is down does not stop
// the server from starting.
func newOTLPTracerProvider(cfg Config) (trace.TracerProvider, func(context.Context) error, error) {
	exp, err := otlptracegrpc.New(context.Background(),
		otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint),
		otlptracegrpc.WithInsecure())
	if err != nil {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %s: %w", cfg.OTLPEndpoint, err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", "kuberpc")}
	if cfg.PodName != "" {
		attrs = append(attrs, attribute.String("k8s.pod.name", cfg.PodName))
	}
	if cfg.PodNamespace != "" {
		attrs = append(attrs, attribute.String("k8s.namespace.name", cfg.PodNamespace))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewWithAttributes("", attrs...)))
	return tp, tp.Shutdown, nil
}
