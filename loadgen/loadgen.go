// Package loadgen drives gRPC load the way the fault suite and the
// autoscaling tests need it, ghz-like: an open loop of unary calls at a
// fixed rate (each call on its own goroutine at its scheduled time, so a
// slow server cannot slow the load down), plus long-lived bidirectional
// streams that keep exchanging messages; every outcome is recorded with
// its status code, its latency and the address that answered, into a
// per-second timeline and a summary. `kuberpc load` is its command line.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/examples/example"
)

// MaxRate and MaxStreams bound Options.Rate and Options.Streams: each
// call and stream runs on a goroutine of its own, and a call holds its
// goroutine until its answer or deadline, so past them one process
// spends its memory on waiting goroutines rather than on load (a
// million calls a second is a call every microsecond, more than one
// client process sends; past a billion the interval would be 0).
const (
	MaxRate    = 1_000_000
	MaxStreams = 100_000
)

// Options describe the load.
type Options struct {
	// Rate is unary calls per second, at most MaxRate; 0 sends none.
	Rate int
	// Duration of the load. Required.
	Duration time.Duration
	// Deadline of each unary call, and how long a stream may go without an
	// answer before it counts as hung. Default 1s.
	Deadline time.Duration
	// Streams is how many bidirectional streams to keep open, at most
	// MaxStreams; a stream that ends is re-opened (the client re-picks a
	// replica).
	Streams int
	// StreamInterval is how often each stream sends a message. Default
	// 100ms.
	StreamInterval time.Duration
	// Call, when set, is the unary call in place of the reference
	// ExampleService/SayHello, for any method of any service: it makes
	// the run's i-th call with ctx (its deadline is Deadline) and opts
	// (which record the address that answers) and returns its error.
	Call func(ctx context.Context, i int, opts ...grpc.CallOption) error
	// Progress, when set, receives one line per second.
	Progress io.Writer
	// Stop, when set, ends the load early when it is closed: no call is
	// scheduled after it and the streams close, while calls in flight run
	// to their end (cancelling the context of Run cancels those too).
	Stop <-chan struct{}
}

// Second is one second of the timeline.
type Second struct {
	// Sent unary calls scheduled in this second, and their outcomes by
	// code (counted in the second they were scheduled).
	Sent  int
	Codes map[codes.Code]int
	// Peers counts successful unary calls by the address that answered.
	Peers map[string]int
	// Latencies of the successful unary calls scheduled in this second.
	Latencies []time.Duration
	// StreamEnds counts streams that ended in this second, by code.
	StreamEnds map[codes.Code]int
}

// Result is what a run measured.
type Result struct {
	Timeline []Second
	// Latencies of successful unary calls. Every one is kept, here and in
	// its Second, 16 bytes a call: a run holds about Rate × Duration ×
	// 16 B (58 MB for an hour at 1,000 calls a second), so a long soak at
	// a high rate is better run as several shorter ones.
	Latencies []time.Duration
	// Codes of every unary call; Peers of the successful ones.
	Codes map[codes.Code]int
	Peers map[string]int
	// Streams opened, streams that ended (by code), and streams that went
	// longer than Deadline without an answer while open (hung).
	StreamsOpened int
	StreamEnds    map[codes.Code]int
	HungStreams   int
	// StreamMessages answered.
	StreamMessages int
	// FirstFailures holds, for each code a unary call failed with, the
	// failure of the call scheduled first (calls end out of order):
	// enough to tell one cause of a code from another (a status from the
	// server, grpc-go's "max retries exhausted", a connection error) when
	// a run fails.
	FirstFailures map[codes.Code]Failure
}

// Failure is one failed unary call.
type Failure struct {
	// At is when the call was scheduled, from the start of the load.
	At time.Duration
	// Err is the call's error message.
	Err string
}

// Failed is the number of unary calls that did not succeed.
func (r Result) Failed() int {
	n := 0
	for c, k := range r.Codes {
		if c != codes.OK {
			n += k
		}
	}
	return n
}

// Percentile returns the p-th percentile (0-100) of the successful calls'
// latencies.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.Latencies)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

type recorder struct {
	mu    sync.Mutex
	start time.Time
	res   Result
}

func (r *recorder) second(at time.Time) *Second {
	i := max(0, int(at.Sub(r.start)/time.Second))
	for len(r.res.Timeline) <= i {
		r.res.Timeline = append(r.res.Timeline, Second{Codes: map[codes.Code]int{}, Peers: map[string]int{}, StreamEnds: map[codes.Code]int{}})
	}
	return &r.res.Timeline[i]
}

// Run drives load through cc until opts.Duration has passed (or ctx ends)
// and every call has finished, and returns what it measured. The unary
// call is opts.Call, by default the reference ExampleService/SayHello;
// the streams are StreamService/Chat.
func Run(ctx context.Context, cc grpc.ClientConnInterface, opts Options) (Result, error) {
	if opts.Duration <= 0 {
		return Result{}, errors.New("loadgen: Duration must be positive")
	}
	if opts.Rate < 0 || opts.Streams < 0 {
		return Result{}, fmt.Errorf("loadgen: Rate %d and Streams %d must not be negative", opts.Rate, opts.Streams)
	}
	if opts.Rate > MaxRate {
		return Result{}, fmt.Errorf("loadgen: Rate %d: at most %d calls a second from one process; run several", opts.Rate, MaxRate)
	}
	if opts.Streams > MaxStreams {
		return Result{}, fmt.Errorf("loadgen: Streams %d: at most %d streams from one process; run several", opts.Streams, MaxStreams)
	}
	if opts.Deadline <= 0 {
		opts.Deadline = time.Second
	}
	if opts.StreamInterval <= 0 {
		opts.StreamInterval = 100 * time.Millisecond
	}
	rec := &recorder{start: time.Now()}
	rec.res.Codes, rec.res.Peers, rec.res.StreamEnds = map[codes.Code]int{}, map[string]int{}, map[codes.Code]int{}
	rec.res.FirstFailures = map[codes.Code]Failure{}
	end := rec.start.Add(opts.Duration)
	loadCtx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	if opts.Stop != nil {
		go func() {
			select {
			case <-opts.Stop:
				cancel()
			case <-loadCtx.Done():
			}
		}()
	}

	var wg sync.WaitGroup
	for i := range opts.Streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			streamLoop(loadCtx, example.NewStreamServiceClient(cc), rec, opts, i)
		}()
	}
	if opts.Progress != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			progress(loadCtx, rec, opts.Progress)
		}()
	}
	call := opts.Call
	if call == nil {
		unary := example.NewExampleServiceClient(cc)
		call = func(ctx context.Context, i int, opts ...grpc.CallOption) error {
			_, err := unary.SayHello(ctx, &example.Request{Id: int32(i), Name: "load"}, opts...)
			return err
		}
	}
	if opts.Rate > 0 {
		interval := time.Second / time.Duration(opts.Rate)
		for i := 0; ; i++ {
			at := rec.start.Add(time.Duration(i) * interval)
			if !at.Before(end) || loadCtx.Err() != nil {
				break
			}
			time.Sleep(time.Until(at))
			rec.mu.Lock()
			rec.second(at).Sent++
			rec.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				callCtx, cancel := context.WithDeadline(ctx, at.Add(opts.Deadline))
				defer cancel()
				var p peer.Peer
				err := call(callCtx, i, grpc.Peer(&p))
				lat := time.Since(at)
				code := status.Code(err)
				rec.mu.Lock()
				defer rec.mu.Unlock()
				s := rec.second(at)
				s.Codes[code]++
				rec.res.Codes[code]++
				if f, seen := rec.res.FirstFailures[code]; err != nil && (!seen || at.Sub(rec.start) < f.At) {
					rec.res.FirstFailures[code] = Failure{At: at.Sub(rec.start), Err: err.Error()}
				}
				if err == nil {
					addr := peerHost(p)
					s.Peers[addr]++
					rec.res.Peers[addr]++
					rec.res.Latencies = append(rec.res.Latencies, lat)
					s.Latencies = append(s.Latencies, lat)
				}
			}()
		}
	}
	<-loadCtx.Done()
	wg.Wait()
	return rec.res, nil
}

func peerHost(p peer.Peer) string {
	if p.Addr == nil {
		return "unknown"
	}
	a := p.Addr.String()
	if i := strings.LastIndexByte(a, ':'); i > 0 {
		return strings.Trim(a[:i], "[]")
	}
	return a
}

// streamLoop keeps one Chat stream open, sending a message every interval
// and expecting each answer within the deadline; a stream that ends is
// recorded and re-opened until the load ends.
func streamLoop(ctx context.Context, c example.StreamServiceClient, rec *recorder, opts Options, id int) {
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := c.Chat(sctx)
		rec.mu.Lock()
		rec.res.StreamsOpened++
		rec.mu.Unlock()
		if err == nil {
			err = converse(ctx, stream, rec, opts, id)
		}
		cancel()
		if loadEnded(ctx) {
			return // the load ended, not the stream
		}
		code := status.Code(err)
		if errors.Is(err, errHung) {
			code = codes.DeadlineExceeded
		}
		rec.mu.Lock()
		rec.second(time.Now()).StreamEnds[code]++
		rec.res.StreamEnds[code]++
		if errors.Is(err, errHung) {
			rec.res.HungStreams++
		}
		rec.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(opts.StreamInterval):
		}
	}
}

// loadEnded reports whether the load's context is done or past its
// deadline. The second matters: the server enforces the same deadline
// (grpc-timeout), and on a loaded machine its DEADLINE_EXCEEDED can
// arrive before the context's own timer has run, while ctx.Err() is
// still nil; such a stream did not fail, the load ended.
func loadEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

var errHung = errors.New("stream hung: no answer within the deadline")

func converse(ctx context.Context, stream example.StreamService_ChatClient, rec *recorder, opts Options, id int) error {
	got := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			_, err := stream.Recv()
			if err == nil {
				rec.mu.Lock()
				rec.res.StreamMessages++
				rec.mu.Unlock()
			}
			select {
			case got <- err:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(opts.StreamInterval)
	defer tick.Stop()
	for n := 0; ; n++ {
		if err := stream.Send(&example.Request{Id: int32(n), Name: fmt.Sprintf("stream-%d", id)}); err != nil {
			// The status is in Recv's error.
			select {
			case err := <-got:
				return err
			case <-time.After(opts.Deadline):
				return errHung
			}
		}
		select {
		case err := <-got:
			if err != nil {
				return err
			}
		case <-time.After(opts.Deadline):
			return errHung
		case <-ctx.Done():
			stream.CloseSend()
			return ctx.Err()
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			stream.CloseSend()
			return ctx.Err()
		}
	}
}

// progress prints one line per second: the previous second's calls.
func progress(ctx context.Context, rec *recorder, w io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rec.mu.Lock()
		var line string
		if i < len(rec.res.Timeline) {
			s := rec.res.Timeline[i]
			line = fmt.Sprintf("%3ds  sent %5d  %s  streams ended %s", i+1, s.Sent, codeList(s.Codes), codeList(s.StreamEnds))
		}
		rec.mu.Unlock()
		if line != "" {
			fmt.Fprintln(w, line)
		}
	}
}

func codeList(m map[codes.Code]int) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for c, n := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// Summary writes the result as a table: calls by code, latency
// percentiles, the share each answering address took, and the streams.
func (r Result) Summary(w io.Writer) {
	total := 0
	for _, n := range r.Codes {
		total += n
	}
	fmt.Fprintf(w, "unary calls: %d, failed %d (%s)\n", total, r.Failed(), codeList(r.Codes))
	var failed []codes.Code
	for c := range r.FirstFailures {
		failed = append(failed, c)
	}
	slices.Sort(failed)
	for _, c := range failed {
		f := r.FirstFailures[c]
		fmt.Fprintf(w, "first %s, scheduled at %.1fs: %s\n", c, f.At.Seconds(), f.Err)
	}
	fmt.Fprintf(w, "latency of successful calls: p50 %v  p90 %v  p99 %v  max %v\n",
		r.Percentile(50).Round(time.Microsecond), r.Percentile(90).Round(time.Microsecond),
		r.Percentile(99).Round(time.Microsecond), r.Percentile(100).Round(time.Microsecond))
	ok := r.Codes[codes.OK]
	var peers []string
	for p := range r.Peers {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	fmt.Fprintf(w, "%-20s %8s %7s\n", "ANSWERED BY", "CALLS", "SHARE")
	for _, p := range peers {
		fmt.Fprintf(w, "%-20s %8d %6.1f%%\n", p, r.Peers[p], 100*float64(r.Peers[p])/float64(max(ok, 1)))
	}
	if r.StreamsOpened > 0 {
		fmt.Fprintf(w, "streams: opened %d, ended %s, hung %d, messages answered %d\n", r.StreamsOpened, codeList(r.StreamEnds), r.HungStreams, r.StreamMessages)
	}
}
