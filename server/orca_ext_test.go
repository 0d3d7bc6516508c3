package server_test

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
	"github.com/kuberpc/kuberpc/server"
)

// TestApplicationUtilizationIsAMeanOverTheReportsInterval: the ORCA
// application utilization a report carries is the mean of the gauge over
// the second the report's RPS covers, not the gauge's value at the
// moment of the report. The gauge here reads 0 and 1 in turn, as "workers
// busy" does on a replica with a call at a time: each report must say
// about 0.5, where a reading at the moment says 0 or 1, and
// weighted_round_robin's weight (RPS ÷ utilization) with it jumps
// between RPS and a hundred times RPS (it floors utilization at 0.01).
func TestApplicationUtilizationIsAMeanOverTheReportsInterval(t *testing.T) {
	var reads atomic.Int64
	call := perCallReports(t, func() float64 { return float64(reads.Add(1) % 2) })
	report := func() float64 { return call().ApplicationUtilization }
	// The first report, before a second has passed, has one reading; wait
	// for one that covers a second of them.
	deadline := time.Now().Add(5 * time.Second)
	for u := report(); u == 0 || u == 1; u = report() {
		if time.Now().After(deadline) {
			t.Fatalf("5s in, the reports still carry single readings (%v); want a mean", u)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var got []float64
	for range 20 {
		got = append(got, report())
	}
	for _, u := range got {
		if u < 0.4 || u > 0.6 {
			t.Fatalf("application utilization per call %v; want each about 0.5, the gauge's mean", got)
		}
	}
}

// TestApplicationUtilizationThatIsNotANumberIsNoReading: a gauge that
// reads NaN or an infinity (a ratio of zeros, a division by an empty
// pool) leaves the report's application utilization unset, so that
// weighted_round_robin falls back on the CPU's, instead of sending NaN,
// which makes a replica's weight NaN.
func TestApplicationUtilizationThatIsNotANumberIsNoReading(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1)} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			call := perCallReports(t, func() float64 { return v })
			for range 3 {
				if u := call().ApplicationUtilization; u != 0 {
					t.Fatalf("a gauge reading %v: the report's application utilization is %v, want it unset (0)", v, u)
				}
				time.Sleep(600 * time.Millisecond) // a report computed after a second of samples too
			}
		})
	}
}

// perCallReports serves the example with per-call ORCA reports and gauge
// as the application utilization, and returns a function making a call
// and returning its report.
func perCallReports(t *testing.T, gauge func() float64) func() *orcapb.OrcaLoadReport {
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = time.Millisecond
	cfg.ORCAPerCall = true
	_, addr := replicas.Serve(t, replicas.ExampleService(example.Greeter{}), server.WithConfig(cfg), server.WithUtilization(gauge))
	c := example.NewExampleServiceClient(dial(t, addr))
	return func() *orcapb.OrcaLoadReport {
		t.Helper()
		var md metadata.MD
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.SayHello(ctx, &example.Request{Name: "orca"}, grpc.Trailer(&md)); err != nil {
			t.Fatal(err)
		}
		raw := md.Get("endpoint-load-metrics-bin")
		if len(raw) != 1 {
			t.Fatalf("trailers %v: want one endpoint-load-metrics-bin", md)
		}
		var rep orcapb.OrcaLoadReport
		if err := proto.Unmarshal([]byte(raw[0]), &rep); err != nil {
			t.Fatal(err)
		}
		return &rep
	}
}
