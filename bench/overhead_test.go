package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// rawServer serves ExampleService on a plain grpc.Server.
func rawServer(b *testing.B) string {
	b.Helper()
	s := grpc.NewServer()
	example.RegisterExampleServiceServer(s, example.Greeter{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(lis)
	b.Cleanup(s.Stop)
	return lis.Addr().String()
}

// kuberpcServer serves ExampleService on the kuberpc runtime with default
// options (metrics on, tracing off).
func kuberpcServer(b *testing.B) string {
	b.Helper()
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = time.Millisecond
	s, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	example.RegisterExampleServiceServer(s, example.Greeter{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(lis)
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	return lis.Addr().String()
}

// unarySide calls SayHello; with deadline > 0 each call carries that
// deadline, as kuberpc's client gives calls that have none.
func unarySide(b *testing.B, cc *grpc.ClientConn, payload int, deadline time.Duration) Side {
	c := example.NewExampleServiceClient(cc)
	req := &example.Request{Id: 1, Name: strings.Repeat("x", payload)}
	call := func() {
		if _, err := c.SayHello(context.Background(), req); err != nil {
			b.Error(err)
		}
	}
	if deadline > 0 {
		call = func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			if _, err := c.SayHello(ctx, req); err != nil {
				b.Error(err)
			}
		}
	}
	return func(n, conc int) { Parallel(n, conc, call) }
}

// BenchmarkOverheadUnary compares unary SayHello through kuberpc's server
// and client (default options: metrics on, tracing off, 10s default
// deadline) with raw grpc-go, interleaved in one run. It reports QPS and
// allocs/op (client and server together) and the ratios kuberpc ÷ raw
// (goals: qps-ratio ≥ 0.95, allocs-ratio ≤ 1.07).
//
// The default deadline is most of kuberpc's cost: a deadline makes both
// grpc-go ends build timer contexts and the client send grpc-timeout. So a
// third side, raw grpc-go with the same 10s deadline on every call, gives
// the like-for-like ratios (qps-ratio-same-deadline, allocs-ratio-same-deadline).
func BenchmarkOverheadUnary(b *testing.B) {
	for _, payload := range []int{1, 1024} {
		for _, conc := range []int{1, 64} {
			b.Run(fmt.Sprintf("payload=%d/conc=%d", payload, conc), func(b *testing.B) {
				rawCC, err := grpc.NewClient("passthrough:///"+rawServer(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer rawCC.Close()
				kCC, err := client.Dial("passthrough:///"+kuberpcServer(b), client.WithRegistry(prometheus.NewRegistry()))
				if err != nil {
					b.Fatal(err)
				}
				defer kCC.Close()
				raw := unarySide(b, rawCC, payload, 0)
				rawDeadline := unarySide(b, rawCC, payload, 10*time.Second)
				kub := unarySide(b, kCC, payload, 0)
				raw(100, conc) // warm up connections
				kub(100, conc)
				const rounds = 5
				n := max(b.N/rounds, 1)
				b.ResetTimer()
				rs := Interleave(rounds, n, conc, raw, kub, rawDeadline)
				b.StopTimer()
				rr, kr, rd := rs[0], rs[1], rs[2]
				b.ReportMetric(rr.QPS(), "raw-qps")
				b.ReportMetric(kr.QPS(), "kuberpc-qps")
				b.ReportMetric(MedianRoundRatio(kr, rr), "qps-ratio")
				b.ReportMetric(MedianRoundRatio(kr, rd), "qps-ratio-same-deadline")
				b.ReportMetric(rr.AllocsPerOp(), "raw-allocs/op")
				b.ReportMetric(kr.AllocsPerOp(), "kuberpc-allocs/op")
				b.ReportMetric(kr.AllocsPerOp()/rr.AllocsPerOp(), "allocs-ratio")
				b.ReportMetric(kr.AllocsPerOp()/rd.AllocsPerOp(), "allocs-ratio-same-deadline")
			})
		}
	}
}
