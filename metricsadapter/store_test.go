package metricsadapter

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// exposition is a server's /metrics: n SayHello calls (failed of them
// UNAVAILABLE), inFlight in flight, and health checks the adapter leaves
// out.
func exposition(n, failed, inFlight int) []byte {
	return fmt.Appendf(nil, `# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary"} %d
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary"} %d
grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 5000
# TYPE grpc_server_in_flight gauge
grpc_server_in_flight{grpc_method="SayHello",grpc_service="example.ExampleService",grpc_type="unary"} %d
grpc_server_in_flight{grpc_method="Watch",grpc_service="grpc.health.v1.Health",grpc_type="server_stream"} 3
`, n-failed, failed, inFlight)
}

func add(t *testing.T, s *Store, key string, at time.Time, n, failed, inFlight int) {
	t.Helper()
	sm, err := ParseSample(exposition(n, failed, inFlight), at)
	if err != nil {
		t.Fatal(err)
	}
	s.Add(key, sm, nil)
}

func TestStoreRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := NewStore(30 * time.Second)
	add(t, s, "p", t0, 100, 0, 2)
	if _, ok := s.Get("p", MetricRequestsPerSecond); ok {
		t.Fatal("a value from one sample")
	}
	add(t, s, "p", t0.Add(10*time.Second), 1100, 10, 4)
	add(t, s, "p", t0.Add(20*time.Second), 2100, 20, 6)
	v, ok := s.Get("p", MetricRequestsPerSecond)
	if !ok || v.Value != 100 || v.Window != 20*time.Second {
		t.Errorf("rate = %+v, %v; want 100/s over 20 s", v, ok)
	}
	if v, _ := s.Get("p", MetricErrorRatio); v.Value != 0.01 {
		t.Errorf("error ratio = %v; want 0.01", v.Value)
	}
	if v, _ := s.Get("p", MetricInFlight); v.Value != 5 {
		t.Errorf("in flight = %v; want 5 (the health watches left out)", v.Value)
	}
	// The window slides: at 50 s only the samples from 20 s on count.
	add(t, s, "p", t0.Add(50*time.Second), 2100, 20, 0)
	if v, _ := s.Get("p", MetricRequestsPerSecond); v.Value != 0 || v.Window != 30*time.Second {
		t.Errorf("after the load stopped: %+v; want 0/s over 30 s", v)
	}
	// A restarted process: its counters start again, and so does the series.
	add(t, s, "p", t0.Add(55*time.Second), 10, 0, 0)
	if _, ok := s.Get("p", MetricRequestsPerSecond); ok {
		t.Errorf("a rate across a counter reset")
	}
	// A failed scrape: no value, and the error is kept to say why.
	s.Add("p", Sample{}, errors.New("connection refused"))
	if _, ok := s.Get("p", MetricRequestsPerSecond); ok || s.Err("p") == nil {
		t.Errorf("a value after a failed scrape")
	}
	if _, ok := s.Get("p", "grpc_server_nonsense"); ok {
		t.Errorf("a value for an unknown metric")
	}
	s.Forget(func(string) bool { return false })
	if s.Err("p") != nil {
		t.Errorf("a forgotten pod kept its series")
	}
}

func TestParseSampleRejectsGarbage(t *testing.T) {
	for _, b := range []string{"not { metrics", "grpc_server_handled_total{grpc_code=\"OK\"} NaNx\n"} {
		if _, err := ParseSample([]byte(b), time.Now()); err == nil {
			t.Errorf("ParseSample(%q) accepted it", b)
		}
	}
}

// TestParseSampleRefusesWhatIsNotACount: a count that is NaN, infinite or
// negative fails the scrape, naming the series, instead of reaching the
// HPA as a value (int64(NaN * 1000) is the lowest int64 on amd64).
func TestParseSampleRefusesWhatIsNotACount(t *testing.T) {
	for _, c := range []struct{ series, value, want string }{
		{"grpc_server_handled_total", "NaN", `grpc_server_handled_total{grpc_service="example.ExampleService",grpc_method="SayHello"} is NaN: not a count`},
		{"grpc_server_handled_total", "+Inf", "is +Inf: not a count"},
		{"grpc_server_handled_total", "-5", "is -5: not a count"},
		{"grpc_server_in_flight", "NaN", `grpc_server_in_flight{grpc_service="example.ExampleService",grpc_method="SayHello"} is NaN`},
		{"grpc_server_in_flight", "-1", "is -1: not a count"},
	} {
		typ := "counter"
		if c.series == "grpc_server_in_flight" {
			typ = "gauge"
		}
		b := fmt.Sprintf("# TYPE %s %s\n%s{grpc_code=\"OK\",grpc_method=\"SayHello\",grpc_service=\"example.ExampleService\"} %s\n", c.series, typ, c.series, c.value)
		_, err := ParseSample([]byte(b), time.Now())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v; want an error saying %q", c.series, c.value, err, c.want)
		}
	}
}

// TestStoreServesNoValuePastMaxValue: counts that add up to a rate past
// what a quantity in thousandths holds give no value, rather than one
// that wrapped around.
func TestStoreServesNoValuePastMaxValue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := NewStore(time.Minute)
	for i, n := range []float64{0, 1e300} {
		sm, err := ParseSample(fmt.Appendf(nil, "# TYPE grpc_server_handled_total counter\ngrpc_server_handled_total{grpc_code=\"OK\",grpc_service=\"a.B\"} %g\n", n), t0.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		s.Add("p", sm, nil)
	}
	if v, ok := s.Get("p", MetricRequestsPerSecond); ok {
		t.Errorf("rate %v served; want none past %d", v.Value, int64(MaxValue))
	}
	if v, ok := s.compute("p", MetricRequestsPerSecond); !ok || v.Value != 1e300 {
		t.Errorf("the rate itself: %v, %v; want 1e300", v.Value, ok)
	}
}

// TestParseSampleReadsUntypedSeries: an exposition without TYPE lines
// (a hand-written exporter, another language's runtime) gives untyped
// series, whose values count as the kind the adapter expects; a series
// of another kind fails the scrape, naming it. Before, both read as 0: a
// pod serving 500 calls a second reported none, and the HPA scaled it in.
func TestParseSampleReadsUntypedSeries(t *testing.T) {
	b := "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"SayHello\",grpc_service=\"example.ExampleService\"} 500\n" +
		"grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"SayHello\",grpc_service=\"example.ExampleService\"} 20\n" +
		"grpc_server_in_flight{grpc_method=\"SayHello\",grpc_service=\"example.ExampleService\"} 3\n"
	s, err := ParseSample([]byte(b), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s.Handled != 520 || s.Failed != 20 || s.InFlight != 3 {
		t.Errorf("untyped series: handled %v, failed %v, in flight %v; want 520, 20, 3", s.Handled, s.Failed, s.InFlight)
	}
	for _, c := range []struct{ series, typ, want string }{
		{"grpc_server_handled_total", "gauge", "grpc_server_handled_total is a gauge: want a counter"},
		{"grpc_server_in_flight", "counter", "grpc_server_in_flight is a counter: want a gauge"},
		{"grpc_server_handling_seconds", "summary", "grpc_server_handling_seconds is a summary: want a histogram"},
	} {
		b := fmt.Sprintf("# TYPE %s %s\n%s{grpc_code=\"OK\",grpc_method=\"SayHello\",grpc_service=\"example.ExampleService\"} 1\n", c.series, c.typ, c.series)
		if _, err := ParseSample([]byte(b), time.Now()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s as a %s: %v; want an error saying %q", c.series, c.typ, err, c.want)
		}
	}
}
