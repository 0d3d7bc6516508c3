package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// newOTLPTracerProvider exports spans over OTLP/gRPC to cfg.OTLPEndpoint.
// Every other standard variable (OTEL_EXPORTER_OTLP_HEADERS, _CERTIFICATE,
// _CLIENT_CERTIFICATE, _CLIENT_KEY, _TIMEOUT, _COMPRESSION, and their
// _TRACES_ forms) is read by the exporter itself; an https endpoint uses
// TLS. The resource carries service.name (cfg.ServiceName), the pod and
// namespace, and OTEL_RESOURCE_ATTRIBUTES. The exporter connects lazily,
// so a collector that is down does not stop the server from starting.
func newOTLPTracerProvider(cfg Config) (trace.TracerProvider, func(context.Context) error, error) {
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpointURL(otlpURL(cfg.OTLPEndpoint)))
	if err != nil {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %s: %w", cfg.OTLPEndpoint, err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.serviceName())}
	if cfg.PodName != "" {
		attrs = append(attrs, attribute.String("k8s.pod.name", cfg.PodName))
	}
	if cfg.PodNamespace != "" {
		attrs = append(attrs, attribute.String("k8s.namespace.name", cfg.PodNamespace))
	}
	res, err := resource.New(context.Background(), resource.WithFromEnv(), resource.WithAttributes(attrs...))
	if err != nil {
		return nil, nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

// otlpURL makes a URL of host:port (taken as plaintext, as before the
// standard variable was a URL).
func otlpURL(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return endpoint
	}
	return "http://" + endpoint
}

// serviceName is the service.name of traces: ServiceName (OTEL_SERVICE_NAME,
// which kuberpc's manifests set to the app's name), else the program's
// name.
func (c Config) serviceName() string {
	if c.ServiceName != "" {
		return c.ServiceName
	}
	return filepath.Base(os.Args[0])
}

// traceLogHandler adds trace_id and span_id to every record logged with
// the context of a traced RPC.
type traceLogHandler struct{ slog.Handler }

func (h traceLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceLogHandler{h.Handler.WithAttrs(as)}
}

func (h traceLogHandler) WithGroup(name string) slog.Handler {
	return traceLogHandler{h.Handler.WithGroup(name)}
}
