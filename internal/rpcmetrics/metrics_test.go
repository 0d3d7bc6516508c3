package rpcmetrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"

	"github.com/kuberpc/kuberpc/internal/rpcmetrics"
)

// TestSeries checks what a registry shared by two Metrics exports: the
// counts of both summed per method, a handled series for every code, the
// calls still running as in flight, and the histogram beside them.
func TestSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1, err := rpcmetrics.New("server", reg)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := rpcmetrics.New("server", reg)
	if err != nil {
		t.Fatalf("a second Metrics on the same registry: %v", err)
	}
	a1 := m1.Method("/pkg.Svc/A", rpcmetrics.Unary)
	for range 3 {
		a1.Start()
	}
	a1.Done(codes.OK, time.Millisecond)
	a1.Done(codes.OK, time.Millisecond)
	a2 := m2.Method("/pkg.Svc/A", rpcmetrics.Unary)
	a2.Start()
	a2.Done(codes.NotFound, time.Millisecond)
	b := m1.Method("/pkg.Svc/B", rpcmetrics.BidiStream)
	b.Start()
	b.Done(codes.Unavailable, time.Second)

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string, labels map[string]string) (*dto.Metric, int) {
		var found *dto.Metric
		n := 0
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
		metrics:
			for _, m := range f.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue metrics
					}
				}
				found = m
				n++
			}
		}
		return found, n
	}
	a := map[string]string{"grpc_service": "pkg.Svc", "grpc_method": "A", "grpc_type": "unary"}
	with := func(k, v string) map[string]string {
		out := map[string]string{k: v}
		for k, v := range a {
			out[k] = v
		}
		return out
	}
	if m, _ := get("grpc_server_started_total", a); m.GetCounter().GetValue() != 4 {
		t.Errorf("started A = %v, want 4", m.GetCounter().GetValue())
	}
	if m, _ := get("grpc_server_in_flight", a); m.GetGauge().GetValue() != 1 {
		t.Errorf("in flight A = %v, want 1", m.GetGauge().GetValue())
	}
	if m, _ := get("grpc_server_handled_total", with("grpc_code", "OK")); m.GetCounter().GetValue() != 2 {
		t.Errorf("handled A OK = %v, want 2", m.GetCounter().GetValue())
	}
	if m, _ := get("grpc_server_handled_total", with("grpc_code", "NotFound")); m.GetCounter().GetValue() != 1 {
		t.Errorf("handled A NotFound = %v, want 1", m.GetCounter().GetValue())
	}
	if _, n := get("grpc_server_handled_total", a); n != 17 {
		t.Errorf("A has %d handled series, want one per code (17)", n)
	}
	if m, _ := get("grpc_server_handling_seconds", a); m.GetHistogram().GetSampleCount() != 3 {
		t.Errorf("latency samples of A = %v, want 3", m.GetHistogram().GetSampleCount())
	}
	bl := map[string]string{"grpc_method": "B", "grpc_type": "bidi_stream", "grpc_code": "Unavailable"}
	if m, n := get("grpc_server_handled_total", bl); n != 1 || m.GetCounter().GetValue() != 1 {
		t.Errorf("handled B Unavailable: %d series, value %v; want 1 series of 1", n, m.GetCounter().GetValue())
	}
	if _, n := get("grpc_server_started_total", nil); n != 2 {
		t.Errorf("%d started series, want 2 (A and B, each once)", n)
	}

	if completed, failed := m1.Totals(); completed != 3 || failed != 1 {
		t.Errorf("m1.Totals() = %d, %d; want 3 completed, 1 failed", completed, failed)
	}
	if n := m1.InFlight(); n != 1 {
		t.Errorf("m1.InFlight() = %d, want 1", n)
	}
	if got := m1.Running(); len(got) != 1 || got[0] != "pkg.Svc/A×1" {
		t.Errorf("m1.Running() = %q, want [pkg.Svc/A×1]", got)
	}
}
