package metricsadapter_test

import (
	"fmt"
	"time"

	"github.com/kuberpc/kuberpc/metricsadapter"
)

// A pod scraped twice, ten seconds apart: the Store serves its request
// rate and error ratio over that window.
func ExampleStore() {
	expo := func(ok, failed int) []byte {
		return fmt.Appendf(nil, "# TYPE grpc_server_handled_total counter\n"+
			"grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"SayHello\",grpc_service=\"example.ExampleService\",grpc_type=\"unary\"} %d\n"+
			"grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"SayHello\",grpc_service=\"example.ExampleService\",grpc_type=\"unary\"} %d\n", ok, failed)
	}
	store := metricsadapter.NewStore(30 * time.Second)
	t0 := time.Unix(0, 0)
	for i, e := range [][]byte{expo(100, 0), expo(590, 10)} {
		s, err := metricsadapter.ParseSample(e, t0.Add(time.Duration(i)*10*time.Second))
		if err != nil {
			panic(err)
		}
		store.Add("default/example-1/uid", s, nil)
	}
	rate, _ := store.Get("default/example-1/uid", metricsadapter.MetricRequestsPerSecond)
	errs, _ := store.Get("default/example-1/uid", metricsadapter.MetricErrorRatio)
	fmt.Printf("%s %.0f over %v; %s %.2f\n", metricsadapter.MetricRequestsPerSecond, rate.Value, rate.Window, metricsadapter.MetricErrorRatio, errs.Value)
	// Output: grpc_server_requests_per_second 50 over 10s; grpc_server_error_ratio 0.02
}
