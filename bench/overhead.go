package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/refusal"
)

// Scale sizes a run.
type Scale struct {
	// Rounds of each overhead case; every side runs once per round, in an
	// order rotated from round to round.
	Rounds int
	// Round is how long each side runs per round, at least.
	Round time.Duration
	// TailCalls is how many calls a unary round must hold, at least, so
	// that its p99 rests on TailCalls/100 of them: where the baseline
	// makes fewer in Round (large messages, one call in flight), the
	// case's rounds last as long as that takes it, up to MaxRound.
	TailCalls int
	// MaxRound bounds a round lengthened for TailCalls.
	MaxRound time.Duration
	// Calls sizes the other pairs' runs (unary calls per round).
	Calls int
	// Duration of each open-loop phase of the slow-replica pair.
	Duration time.Duration
	// Endpoints of the whole-path measurement.
	Endpoints int
	// Processes measure each unary overhead case of small messages:
	// the run's own and Processes-1 more (see Overhead).
	Processes int
}

// Full is the scale of the committed results; Tiny keeps CI's run short.
var (
	Full = Scale{Rounds: 10, Round: time.Second, TailCalls: 10000, MaxRound: 5 * time.Second, Calls: 2000, Duration: 2 * time.Second, Endpoints: 5000, Processes: 3}
	Tiny = Scale{Rounds: 1, Round: 50 * time.Millisecond, Calls: 20, Duration: 200 * time.Millisecond, Endpoints: 500, Processes: 2}
)

// sideResult is one side's measurements over one round.
type sideResult struct {
	qps, allocs, p50, p99 float64
	cpu                   float64 // CPU time of the process per call, in µs
	refused               float64 // share of calls a kuberpc server refused (shedding), after the client's retries
}

// unaryFor makes SayHello calls from conc goroutines for d (and at least
// one per goroutine) and measures QPS, allocations and CPU time per call
// (client and server, all in this process, and srv's if it is set: a
// server in a process of its own) and latency percentiles.
func unaryFor(c example.ExampleServiceClient, srv remoteServer, req *example.Request, d time.Duration, conc int) (sideResult, error) {
	return unaryCalls(c, srv, req, -1, d, conc)
}

// unaryRound makes n SayHello calls from conc goroutines, measured as
// unaryFor measures.
func unaryRound(c example.ExampleServiceClient, req *example.Request, n, conc int) (sideResult, error) {
	return unaryCalls(c, nil, req, n, 0, conc)
}

func unaryCalls(c example.ExampleServiceClient, srv remoteServer, req *example.Request, n int, d time.Duration, conc int) (sideResult, error) {
	var remote0 usage
	if srv != nil {
		var err error
		if remote0, err = srv.serverUsage(true); err != nil {
			return sideResult{}, err
		}
	}
	runtime.GC()
	u0 := processUsage()
	lat := make([][]time.Duration, conc)
	errs := make([]error, conc)
	var refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for g := range conc {
		k := n / conc
		lat[g] = make([]time.Duration, 0, max(k, 1024))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				if n >= 0 && i >= k || n < 0 && i > 0 && time.Now().After(end) {
					return
				}
				t := time.Now()
				_, err := c.SayHello(context.Background(), req)
				if _, ok := refusal.Is(err); ok {
					// A kuberpc server shedding load, after the client's
					// own retries: counted, not a failure of the run.
					refused.Add(1)
					continue
				}
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
	u1 := processUsage()
	cpu, mallocs := u1.cpu-u0.cpu, u1.mallocs-u0.mallocs
	if srv != nil {
		remote1, err := srv.serverUsage(false)
		if err != nil {
			return sideResult{}, err
		}
		cpu += remote1.cpu - remote0.cpu
		mallocs += remote1.mallocs - remote0.mallocs
	}
	var all []time.Duration
	for g := range conc {
		if errs[g] != nil {
			return sideResult{}, errs[g]
		}
		all = append(all, lat[g]...)
	}
	done := float64(len(all))
	return sideResult{
		qps:     done / el.Seconds(),
		allocs:  float64(mallocs) / done,
		p50:     float64(percentile(all, 50)),
		p99:     float64(percentile(all, 99)),
		cpu:     float64(cpu) / float64(time.Microsecond) / done,
		refused: float64(refused.Load()) / (done + float64(refused.Load())),
	}, nil
}

// processCPU is the CPU time (user and system) the process has used: the
// client's and the server's, both in it. Per call it is a steadier
// measure of cost than QPS, which moves with scheduling.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// streamFor sends messages on one Chat stream for d, then half-closes
// it, reads every answer (one per message) and returns the answers per
// second, counting the time to drain those still in flight.
func streamFor(c example.StreamServiceClient, d time.Duration) (float64, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := c.Chat(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	end := start.Add(d)
	errc := make(chan error, 1)
	sent := 0
	go func() {
		req := &example.Request{Name: "stream"}
		for ; sent == 0 || sent%64 != 0 || time.Now().Before(end); sent++ {
			if err := st.Send(req); err != nil {
				errc <- err
				return
			}
		}
		errc <- st.CloseSend()
	}()
	n := 0
	for {
		_, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		n++
	}
	if err := <-errc; err != nil {
		return 0, err
	}
	if n != sent {
		return 0, fmt.Errorf("stream: %d answers to %d messages", n, sent)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// roundFor is how long the rounds of a unary case whose baseline makes
// qps calls a second last: Round, or long enough for TailCalls, at most
// MaxRound.
func (s Scale) roundFor(qps float64) time.Duration {
	if s.TailCalls <= 0 || qps <= 0 {
		return s.Round
	}
	need := time.Duration(float64(s.TailCalls) / qps * float64(time.Second))
	return min(max(s.Round, need), max(s.Round, s.MaxRound))
}

// overheadSide is one server and client pair the overhead cases measure.
type overheadSide struct {
	name string
	conn sideConn
}

// sideConn is a side's client connection, which stops its server when
// closed.
type sideConn interface {
	grpc.ClientConnInterface
	Close()
}

// asSide adapts a Conn constructor to sideConn.
func asSide(f func() (*Conn, error)) func() (sideConn, error) {
	return func() (sideConn, error) {
		c, err := f()
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// Overhead measures kuberpc's server and client with default options,
// and with the fast path, against raw grpc-go with its defaults, against
// raw grpc-go tuned as kuberpc tunes it (the server's static windows,
// stream workers), and raw grpc-go against a second raw server (A/A: the
// noise floor), every side in each round in an order rotated from round
// to round, in one process. With s.Processes above 1, the unary cases of
// small messages (where the goals are) are measured again in
// s.Processes-1 processes of their own (this executable, through
// RunSubcommand), and each goal row and its A/A row get a row across
// processes: the median of the processes' medians and their spread.
func Overhead(s Scale, progress io.Writer) ([]Row, error) {
	sides, err := overheadSides()
	if err != nil {
		return nil, err
	}
	defer closeSides(sides)
	var rows []Row
	for _, payload := range []int{1, 1024, 64 << 10} {
		for _, conc := range []int{1, 64} {
			cr, round, err := measureCase(sides, s, payload, conc)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(progress, "overhead: %s done (rounds of %v)\n", caseName(payload, conc), round.Round(10*time.Millisecond))
			rows = append(rows, cr...)
			if s.Processes <= 1 || payload > 1024 {
				continue
			}
			perProcess := [][]Row{cr}
			for p := 1; p < s.Processes; p++ {
				pr, err := caseInProcess(caseSpec{Scale: s, Payload: payload, Conc: conc})
				if err != nil {
					return nil, fmt.Errorf("%s, process %d: %w", caseName(payload, conc), p+1, err)
				}
				perProcess = append(perProcess, pr)
			}
			fmt.Fprintf(progress, "overhead: %s done in %d more processes\n", caseName(payload, conc), s.Processes-1)
			rows = append(rows, acrossProcesses(perProcess)...)
		}
	}
	// Streaming: messages per second on one bidi stream, in rounds as
	// long as the unary cases'.
	sres := make([][]float64, len(sides))
	for _, sd := range sides { // warm up
		if _, err := streamFor(example.NewStreamServiceClient(sd.conn), s.Round/5); err != nil {
			return nil, fmt.Errorf("%s: %w", sd.name, err)
		}
	}
	for r := range s.Rounds {
		for k := range sides {
			i := (r + k) % len(sides)
			got, err := streamFor(example.NewStreamServiceClient(sides[i].conn), s.Round)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sides[i].name, err)
			}
			sres[i] = append(sres[i], got)
		}
	}
	fmt.Fprintln(progress, "overhead: streaming done")
	rows = append(rows,
		ratioRow("overhead", "bidi stream, 1 B messages", "msgs/s", "≥ 0.95", sres[sideKuberpc], sres[sideRaw]),
		ratioRow("overhead", "bidi stream, 1 B messages A/A", "msgs/s", "", sres[sideRawAA], sres[sideRaw]),
	)
	return rows, nil
}

// The overhead sides, in overheadSides' order.
const (
	sideRaw = iota
	sideRawAA
	sideRawTuned
	sideKuberpc
	sideFast
	sideRawTuned2
)

var overheadSideNames = [...]string{
	sideRaw: "raw", sideRawAA: "raw A/A", sideRawTuned: "raw tuned",
	sideKuberpc: "kuberpc", sideFast: "kuberpc fast path", sideRawTuned2: "raw tuned, 2 connections",
}

// overheadSides starts the overhead sides' servers and clients.
func overheadSides() ([]overheadSide, error) {
	var sides []overheadSide
	for i, f := range []func() (sideConn, error){
		sideRaw:       asSide(RawConn),
		sideRawAA:     asSide(RawConn),
		sideRawTuned:  asSide(RawTunedConn),
		sideKuberpc:   asSide(func() (*Conn, error) { return KuberpcConn(nil) }),
		sideFast:      asSide(KuberpcFastConn),
		sideRawTuned2: func() (sideConn, error) { return RawTunedConns(2) },
	} {
		c, err := f()
		if err != nil {
			closeSides(sides)
			return nil, fmt.Errorf("%s: %w", overheadSideNames[i], err)
		}
		sides = append(sides, overheadSide{overheadSideNames[i], c})
	}
	return sides, nil
}

// remoteOf is sd's server if it runs in a process of its own, else nil.
func remoteOf(sd overheadSide) remoteServer {
	r, _ := sd.conn.(remoteServer)
	return r
}

func closeSides(sides []overheadSide) {
	for _, sd := range sides {
		sd.conn.Close()
	}
}

func caseName(payload, conc int) string { return fmt.Sprintf("unary %s, c=%d", size(payload), conc) }

// measureCase runs one unary case's warm-up and rounds on every side and
// returns its rows and the length of its rounds.
func measureCase(sides []overheadSide, s Scale, payload, conc int) ([]Row, time.Duration, error) {
	req := &example.Request{Id: 1, Name: strings.Repeat("x", payload)}
	res := make([][]sideResult, len(sides))
	round := s.Round
	for i, sd := range sides { // warm up
		w, err := unaryFor(example.NewExampleServiceClient(sd.conn), remoteOf(sd), req, s.Round/5, conc)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", sd.name, err)
		}
		if i == sideRaw {
			round = s.roundFor(w.qps)
		}
	}
	for r := range s.Rounds {
		for k := range sides {
			i := (r + k) % len(sides)
			got, err := unaryFor(example.NewExampleServiceClient(sides[i].conn), remoteOf(sides[i]), req, round, conc)
			if err != nil {
				return nil, 0, fmt.Errorf("%s: %w", sides[i].name, err)
			}
			res[i] = append(res[i], got)
		}
	}
	return caseRows(caseName(payload, conc), payload, conc, res), round, nil
}

// caseRows turns one case's per-side, per-round results into its rows.
func caseRows(cas string, payload, conc int, res [][]sideResult) []Row {
	get := func(side int, f func(sideResult) float64) []float64 {
		var v []float64
		for _, r := range res[side] {
			v = append(v, f(r))
		}
		return v
	}
	qps := func(r sideResult) float64 { return r.qps }
	allocs := func(r sideResult) float64 { return r.allocs }
	p50 := func(r sideResult) float64 { return r.p50 }
	p99 := func(r sideResult) float64 { return r.p99 }
	cpu := func(r sideResult) float64 { return r.cpu }
	refusedShare := func(r sideResult) float64 { return r.refused }
	const raw, rawAA, rawTuned, kub, fast, rawTuned2 = sideRaw, sideRawAA, sideRawTuned, sideKuberpc, sideFast, sideRawTuned2
	return []Row{
		ratioRow("overhead", cas, "QPS", "≥ 0.95", get(kub, qps), get(raw, qps)),
		ratioRow("overhead", cas+" A/A", "QPS", "", get(rawAA, qps), get(raw, qps)),
		ratioRow("overhead", cas+" ÷ raw tuned", "QPS", "", get(kub, qps), get(rawTuned, qps)),
		ratioRow("overhead", cas, "CPU µs/call", "", get(kub, cpu), get(raw, cpu)),
		ratioRow("overhead", cas+" A/A", "CPU µs/call", "", get(rawAA, cpu), get(raw, cpu)),
		ratioRow("overhead", cas+" ÷ raw tuned", "CPU µs/call", "", get(kub, cpu), get(rawTuned, cpu)),
		ratioRow("overhead", cas, "allocs/op", "≤ 1.07", get(kub, allocs), get(raw, allocs)),
		ratioRow("overhead", cas+" A/A", "allocs/op", "", get(rawAA, allocs), get(raw, allocs)),
		ratioRow("overhead", cas+" ÷ raw tuned", "allocs/op", "", get(kub, allocs), get(rawTuned, allocs)),
		ratioRow("overhead", cas, "p50", "", get(kub, p50), get(raw, p50)),
		ratioRow("overhead", cas, "p99", "≤ 1.10", get(kub, p99), get(raw, p99)),
		ratioRow("overhead", cas+" A/A", "p99", "", get(rawAA, p99), get(raw, p99)),
		ratioRow("overhead", cas+" ÷ raw tuned", "p99", "", get(kub, p99), get(rawTuned, p99)),
		ratioRow("overhead", cas+", fast path", "QPS", fastGoal(payload, conc), get(fast, qps), get(raw, qps)),
		ratioRow("overhead", cas+", fast path", "CPU µs/call", "", get(fast, cpu), get(raw, cpu)),
		ratioRow("overhead", cas+", fast path", "allocs/op", "", get(fast, allocs), get(raw, allocs)),
		ratioRow("overhead", cas+", fast path", "p99", "", get(fast, p99), get(raw, p99)),
		ratioRow("overhead", cas+", fast path ÷ raw tuned, 2 connections", "QPS", "", get(fast, qps), get(rawTuned2, qps)),
		ratioRow("overhead", cas+", fast path ÷ raw tuned, 2 connections", "p99", "", get(fast, p99), get(rawTuned2, p99)),
		ratioRow("overhead", cas, "share refused", "", get(kub, refusedShare), get(raw, refusedShare)),
		ratioRow("overhead", cas+", fast path", "share refused", "", get(fast, refusedShare), get(raw, refusedShare)),
	}
}

// fastGoal is the fast path's QPS goal against raw grpc-go's defaults
// for the small messages the goals are set for.
func fastGoal(payload, conc int) string {
	switch {
	case payload > 1024:
		return ""
	case conc == 1:
		return "≥ 1.15"
	}
	return "≥ 1.05"
}

func size(n int) string {
	switch {
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
