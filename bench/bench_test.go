package bench

import (
	"io"
	"os"
	"strings"
	"testing"
)

// The benchmarks run each measurement at the Tiny scale so that CI keeps
// them compiling and running; nothing is asserted about time. The numbers
// in results.md come from `go run ./bench/cmd/report` at the Full scale.

func progress() io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}

func report(b *testing.B, rows []Row) {
	for _, r := range rows {
		b.Logf("%s | %s | %s: ratio %.3f (goal %s)", r.Pair, r.Case, r.Metric, r.Ratio, r.Goal)
	}
}

func BenchmarkOverhead(b *testing.B) {
	for range b.N {
		rows, err := Overhead(Tiny, progress())
		if err != nil {
			b.Fatal(err)
		}
		report(b, rows)
	}
}

func BenchmarkOverheadApart(b *testing.B) {
	for range b.N {
		rows, err := OverheadApart(Tiny, progress())
		if err != nil {
			b.Fatal(err)
		}
		report(b, rows)
	}
}

func BenchmarkSlowReplica(b *testing.B) {
	for range b.N {
		rows, err := SlowReplica(b, Tiny, progress())
		if err != nil {
			b.Fatal(err)
		}
		report(b, rows)
	}
}

func BenchmarkResolverScale(b *testing.B) {
	for range b.N {
		rows, err := ResolverScale(Tiny, progress())
		if err != nil {
			b.Fatal(err)
		}
		report(b, rows)
	}
}

func BenchmarkBalancerPath(b *testing.B) {
	for range b.N {
		rows, err := BalancerPath(Tiny, progress())
		if err != nil {
			b.Fatal(err)
		}
		report(b, rows)
	}
}

func BenchmarkPythonInterop(b *testing.B) {
	for range b.N {
		rows, err := PythonInterop(Tiny, progress())
		if err != nil {
			b.Fatal(err)
		}
		report(b, rows)
	}
}

func BenchmarkChurn(b *testing.B) {
	for range b.N {
		rows, err := Churn(b, Tiny, progress())
		if err != nil {
			b.Fatal(err)
		}
		report(b, rows)
	}
}

func BenchmarkConvergence(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root for the local cluster")
	}
	for range b.N {
		rows, err := Convergence(Tiny, progress())
		if err != nil {
			b.Fatal(err)
		}
		report(b, rows)
	}
}

func TestMain(m *testing.M) {
	RunSubcommand() // Convergence may start the cluster with this binary as its node agent
	os.Exit(m.Run())
}

// BenchmarkOverload reports, per handler kind and server, goodput ÷
// capacity, p99 ÷ unloaded p99 and the share of health checks answered at
// 3× the server's capacity; `go run ./bench/cmd/report -overload` writes
// the full sweep to overload.md.
func BenchmarkOverload(b *testing.B) {
	for _, kind := range []HandlerKind{CPUBound, IOBound} {
		b.Run(string(kind), func(b *testing.B) {
			for range b.N {
				res, err := Overload(kind, Tiny.Duration*5, []float64{3}, progress())
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range res {
					name := strings.ReplaceAll(r.Server, " ", "_")
					b.ReportMetric(r.Goodput/r.Capacity, name+"_goodput/capacity")
					b.ReportMetric(float64(r.P99)/float64(r.UnloadedP99), name+"_p99/unloaded")
					b.ReportMetric(float64(r.HealthOK)/float64(max(r.HealthAll, 1)), name+"_health_answered")
				}
			}
		})
	}
}
