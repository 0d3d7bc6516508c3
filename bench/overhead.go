package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/kuberpc/kuberpc/examples/example"
)

// Scale sizes a run: Rounds of A/B interleaving and calls per round.
type Scale struct {
	Rounds int
	Calls  int // unary calls per round at concurrency 1; ×5 at 64
	// Duration of each open-loop phase of the slow-replica pair.
	Duration time.Duration
}

// Full is the scale of the committed results; Tiny keeps CI's run short.
var (
	Full = Scale{Rounds: 5, Calls: 2000, Duration: 3 * time.Second}
	Tiny = Scale{Rounds: 1, Calls: 20, Duration: 200 * time.Millisecond}
)

// sideResult is one side's measurements over one round.
type sideResult struct {
	qps, allocs, p50, p99 float64
}

// unaryRound makes n SayHello calls from conc goroutines and measures QPS,
// allocations per call (client and server, all in this process) and
// latency percentiles.
func unaryRound(c example.ExampleServiceClient, req *example.Request, n, conc int, deadline bool) (sideResult, error) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	lat := make([][]time.Duration, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range conc {
		k := n / conc
		lat[g] = make([]time.Duration, 0, k)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range k {
				t := time.Now()
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if deadline {
					ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
				}
				_, err := c.SayHello(ctx, req)
				cancel()
				if err != nil {
					errs[g] = err
					return
				}
				lat[g] = append(lat[g], time.Since(t))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	var all []time.Duration
	for g := range conc {
		if errs[g] != nil {
			return sideResult{}, errs[g]
		}
		all = append(all, lat[g]...)
	}
	done := float64(len(all))
	return sideResult{
		qps:    done / el.Seconds(),
		allocs: float64(after.Mallocs-before.Mallocs) / done,
		p50:    float64(percentile(all, 50)),
		p99:    float64(percentile(all, 99)),
	}, nil
}

// streamRound sends n messages on one Chat stream and reads the answers.
func streamRound(c example.StreamServiceClient, n int) (float64, error) {
	st, err := c.Chat(context.Background())
	if err != nil {
		return 0, err
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for range n {
			if err := st.Send(&example.Request{Name: "stream"}); err != nil {
				errc <- err
				return
			}
		}
		errc <- st.CloseSend()
	}()
	for range n {
		if _, err := st.Recv(); err != nil {
			return 0, err
		}
	}
	if _, err := st.Recv(); err != io.EOF {
		return 0, fmt.Errorf("stream end: %v", err)
	}
	if err := <-errc; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// Overhead measures kuberpc's server and client with default options
// (metrics on, tracing off), and with tracing on, against raw grpc-go, A/B
// interleaved on the same machine in the same process.
func Overhead(s Scale, progress io.Writer) ([]Row, error) {
	raw, err := RawConn()
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	kub, err := KuberpcConn(nil)
	if err != nil {
		return nil, err
	}
	defer kub.Close()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())) // spans recorded, not exported
	defer tp.Shutdown(context.Background())
	traced, err := KuberpcConn(tp)
	if err != nil {
		return nil, err
	}
	defer traced.Close()
	sides := []*Conn{raw, kub, traced, raw}
	names := []string{"raw", "kuberpc", "kuberpc+tracing", "raw+deadline"}

	var rows []Row
	for _, payload := range []int{1, 1024, 64 << 10} {
		req := &example.Request{Id: 1, Name: strings.Repeat("x", payload)}
		for _, conc := range []int{1, 64} {
			n := s.Calls
			if conc > 1 {
				n *= 5
			}
			if payload >= 64<<10 {
				n /= 4
			}
			n = max(n, conc)
			res := make([][]sideResult, len(sides))
			for i, sd := range sides { // warm up
				if _, err := unaryRound(example.NewExampleServiceClient(sd), req, max(n/10, conc), conc, i == 3); err != nil {
					return nil, fmt.Errorf("%s: %w", names[i], err)
				}
			}
			for range s.Rounds {
				for i, sd := range sides {
					r, err := unaryRound(example.NewExampleServiceClient(sd), req, n, conc, i == 3)
					if err != nil {
						return nil, fmt.Errorf("%s: %w", names[i], err)
					}
					res[i] = append(res[i], r)
				}
			}
			cas := fmt.Sprintf("unary %s, c=%d", size(payload), conc)
			fmt.Fprintf(progress, "overhead: %s done\n", cas)
			for _, sub := range []struct {
				idx, base int
				suffix    string
			}{{1, 0, ""}, {2, 0, " (tracing on)"}, {1, 3, " ÷ raw with the same 10s deadline"}} {
				get := func(side int, f func(sideResult) float64) []float64 {
					var v []float64
					for _, r := range res[side] {
						v = append(v, f(r))
					}
					return v
				}
				rows = append(rows,
					ratioRow("overhead", cas+sub.suffix, "QPS", goalIf(sub.suffix == "", "≥ 0.95"), get(sub.idx, func(r sideResult) float64 { return r.qps }), get(sub.base, func(r sideResult) float64 { return r.qps })),
					ratioRow("overhead", cas+sub.suffix, "allocs/op", goalIf(sub.suffix == "", "≤ 1.07"), get(sub.idx, func(r sideResult) float64 { return r.allocs }), get(sub.base, func(r sideResult) float64 { return r.allocs })),
					ratioRow("overhead", cas+sub.suffix, "p50", "", get(sub.idx, func(r sideResult) float64 { return r.p50 }), get(sub.base, func(r sideResult) float64 { return r.p50 })),
					ratioRow("overhead", cas+sub.suffix, "p99", goalIf(sub.suffix == "", "≤ 1.10"), get(sub.idx, func(r sideResult) float64 { return r.p99 }), get(sub.base, func(r sideResult) float64 { return r.p99 })),
				)
			}
		}
	}
	// Streaming: messages per second on one bidi stream.
	var sraw, skub []float64
	n := s.Calls * 10
	for range s.Rounds {
		a, err := streamRound(example.NewStreamServiceClient(raw), n)
		if err != nil {
			return nil, err
		}
		b, err := streamRound(example.NewStreamServiceClient(kub), n)
		if err != nil {
			return nil, err
		}
		sraw, skub = append(sraw, a), append(skub, b)
	}
	fmt.Fprintln(progress, "overhead: streaming done")
	rows = append(rows, ratioRow("overhead", "bidi stream, 1 B messages", "msgs/s", "≥ 0.95", skub, sraw))
	return rows, nil
}

func goalIf(ok bool, g string) string {
	if ok {
		return g
	}
	return ""
}

func size(n int) string {
	switch {
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
