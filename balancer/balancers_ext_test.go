// Behaviour of the load-balancing policies against in-process replicas,
// one of which is slowed or reports itself busy.
package balancer_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
	"github.com/kuberpc/kuberpc/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// drive makes total SayHello calls from conc goroutines through a client
// with the given policy and returns each replica's share.
func drive(t *testing.T, rs []*replicas.Replica, policy, cfg string, total, conc int) []float64 {
	return driveWarm(t, rs, policy, cfg, total, conc, 0)
}

// driveWarm is drive with a pause after the warm-up, for policies that
// learn from load reports the servers compute once a second.
func driveWarm(t *testing.T, rs []*replicas.Replica, policy, cfg string, total, conc int, pause time.Duration) []float64 {
	t.Helper()
	cc, err := client.Dial("replicas:///example", client.WithBalancer(policy, cfg),
		client.WithRegistry(prometheus.NewRegistry()), client.WithDialOptions(grpc.WithResolvers(replicas.Resolver(rs))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := example.NewExampleServiceClient(cc)
	call := func(n int) {
		var wg sync.WaitGroup
		for g := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < n; i += conc {
					if _, err := c.SayHello(context.Background(), &example.Request{Id: int32(i)}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	call(total / 5) // warm up: connect, learn latencies and weights
	if pause > 0 {
		time.Sleep(pause)
		call(total / 5)
	}
	replicas.Reset(rs)
	call(total)
	shares := make([]float64, len(rs))
	for i, r := range rs {
		shares[i] = float64(r.Calls.Load()) / float64(total)
	}
	return shares
}

func TestP2CEWMAAvoidsSlowReplica(t *testing.T) {
	rs := replicas.Start(t, 4)
	// 100 ms keeps the slow replica clearly slower than the others even
	// under the race detector on a loaded 2-core machine (at 50 ms, CI
	// runs beside a compile measured 0.086 here and 0.144 under
	// least_request, where the fast replicas' own latency had grown).
	rs[0].SetDelay(100 * time.Millisecond)
	rr := drive(t, rs, "round_robin", "", 2000, 16)
	p2c := drive(t, rs, "p2c_ewma", "", 2000, 16)
	t.Logf("slow replica share: round_robin %.3f, p2c_ewma %.3f", rr[0], p2c[0])
	if math.Abs(rr[0]-0.25) > 0.02 {
		t.Errorf("round_robin gave the slow replica %.3f, want 0.25: the baseline is off", rr[0])
	}
	// Typically 0.02-0.05; a CI run with a compile beside it measured
	// 0.086, over the third this once asked for: half still says the
	// slow replica is avoided, without failing on a busy machine.
	if p2c[0] > rr[0]/2 {
		t.Errorf("p2c_ewma gave the slow replica %.3f, want under half of round_robin's %.3f", p2c[0], rr[0])
	}
}

func TestLeastRequestAvoidsSlowReplica(t *testing.T) {
	rs := replicas.Start(t, 4)
	rs[0].SetDelay(100 * time.Millisecond)
	lr := drive(t, rs, "least_request", "", 2000, 16)
	t.Logf("slow replica share under least_request: %.3f", lr[0])
	if lr[0] > 0.125 {
		t.Errorf("least_request gave the slow replica %.3f, want under half its fair 0.25", lr[0])
	}
}

func TestRandomIsUniform(t *testing.T) {
	rs := replicas.Start(t, 4)
	const total = 4000
	shares := drive(t, rs, "random", "", total, 4)
	// Chi-square against uniform with 3 degrees of freedom; 16.27 is the
	// 0.999 quantile, so this fails by chance once in a thousand runs.
	chi := 0.0
	exp := float64(total) / 4
	for _, s := range shares {
		d := s*total - exp
		chi += d * d / exp
	}
	t.Logf("random shares %v, chi-square %.2f", shares, chi)
	if chi > 16.27 {
		t.Errorf("random shares %v: chi-square %.2f > 16.27, not uniform", shares, chi)
	}
}

func TestWeightedRoundRobinFollowsORCA(t *testing.T) {
	rs := replicas.Start(t, 4)
	rs[0].SetUtilization(0.9) // reports itself nine times as busy
	cfg := `{"blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}`
	// The pause lets every server compute its RPS (a once-a-second load
	// report) while traffic flows; weights need RPS > 0.
	// Weights follow load reports computed once a second: on a machine
	// busy with other test packages a first measurement can start before
	// they settle, so up to three are made; one must show the busy
	// replica avoided (each is logged).
	var shares []float64
	for round := range 3 {
		shares = driveWarm(t, rs, "weighted_round_robin", cfg, 3000, 8, 1500*time.Millisecond)
		t.Logf("round %d: weighted_round_robin shares %v", round+1, shares)
		if shares[0] <= 0.125 {
			break
		}
	}
	if shares[0] > 0.125 {
		t.Errorf("weighted_round_robin gave the busy replica %.3f in each of 3 measurements, want under half its fair 0.25", shares[0])
	}
	// The rest is shared by the idle replicas; how evenly depends on the
	// RPS each reports, which moves with the machine's load.
	for i, s := range shares[1:] {
		if s < 0.15 {
			t.Errorf("idle replica %d got %.3f, want a real share of the traffic", i+1, s)
		}
	}
}

func TestUnknownPolicyConfigIsRejected(t *testing.T) {
	for _, tc := range []struct{ policy, cfg string }{
		{"p2c_ewma", `{"decay":"-1s"}`},
		{"p2c_ewma", `{"decay":"soon"}`},
		{"random", `{"unexpected":1}`},
	} {
		t.Run(fmt.Sprint(tc.policy, tc.cfg), func(t *testing.T) {
			_, err := client.Dial("passthrough:///x", client.WithBalancer(tc.policy, tc.cfg), client.WithoutMetrics())
			if err == nil {
				t.Errorf("Dial with %s %s succeeded, want a config error", tc.policy, tc.cfg)
			}
		})
	}
}

// TestOutlierDetectionEjectsAFailingReplica: a replica that fails every
// call while its health says SERVING stops getting calls once it has
// failed ConsecutiveFailures of them, under every policy.
func TestOutlierDetectionEjectsAFailingReplica(t *testing.T) {
	for _, policy := range []string{"round_robin", "p2c_ewma", "least_request", "random", "weighted_round_robin"} {
		t.Run(policy, func(t *testing.T) {
			rs := replicas.Start(t, 4)
			bad := rs[0]
			cc, err := client.Dial("replicas:///example", client.WithBalancer(policy, ""),
				client.WithRetryPolicy(client.RetryPolicy{MaxAttempts: 1}), // failures visible, not retried
				client.WithRegistry(prometheus.NewRegistry()), client.WithDialOptions(grpc.WithResolvers(replicas.Resolver(rs))))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			c := example.NewExampleServiceClient(cc)
			// Every replica connected before one fails: while the failing one
			// is the only one ready, the picker rightly uses it even ejected
			// (seen: 1-30 of the next 200 calls, 8 runs in 300).
			for i := 0; slices.ContainsFunc(rs, func(r *replicas.Replica) bool { return r.Calls.Load() == 0 }); i++ {
				if i == 2000 {
					t.Fatal("not every replica served a call in 2000")
				}
				c.SayHello(context.Background(), &example.Request{Id: int32(i)})
			}
			bad.SetFailing(true)
			base := bad.Calls.Load()
			for i := 0; bad.Calls.Load()-base < int64(client.DefaultOutlierDetection.ConsecutiveFailures); i++ {
				if i == 2000 {
					// p2c_ewma's failure penalty keeps it away before
					// outlier detection has enough failures to eject it.
					if share := float64(bad.Calls.Load()-base) / 2000; share > 0.005 {
						t.Fatalf("the failing replica got %d of 2000 calls and was not ejected", bad.Calls.Load()-base)
					}
					t.Logf("the failing replica got %d of 2000 calls (the policy avoids it)", bad.Calls.Load()-base)
					return
				}
				c.SayHello(context.Background(), &example.Request{Id: int32(i)})
			}
			before, failures := bad.Calls.Load()-base, 0
			for i := range 200 {
				if _, err := c.SayHello(context.Background(), &example.Request{Id: int32(i)}); err != nil {
					failures++
				}
			}
			if got := bad.Calls.Load() - base - before; got != 0 || failures != 0 {
				t.Errorf("after %d failures the failing replica got %d of the next 200 calls (%d failed); want it ejected", before, got, failures)
			}
		})
	}
}

// TestLeastRequestRotatesOverEqualReplicas: with replicas alike and one
// call at a time every pick is a tie of loads; least_request settles ties
// by recency, so the replica that took a call loses the next tie and no
// replica takes two calls in a row. Ties settled by the draw, as grpc-go's
// policy settles them, send about one call in four to the replica that
// took the one before.
func TestLeastRequestRotatesOverEqualReplicas(t *testing.T) {
	rs := replicas.Start(t, 4)
	cc, err := client.Dial("replicas:///example", client.WithBalancer("least_request", ""),
		client.WithRegistry(prometheus.NewRegistry()), client.WithDialOptions(grpc.WithResolvers(replicas.Resolver(rs))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := example.NewExampleServiceClient(cc)
	var prev string
	repeats, seen := 0, map[string]bool{}
	for i := range 220 {
		var p peer.Peer
		if _, err := c.SayHello(context.Background(), &example.Request{Id: int32(i)}, grpc.Peer(&p)); err != nil {
			t.Fatal(err)
		}
		addr := p.Addr.String()
		if i < 20 { // warm up: every replica connected
			prev = addr
			continue
		}
		seen[addr] = true
		if addr == prev {
			repeats++
		}
		prev = addr
	}
	if repeats > 0 || len(seen) != len(rs) {
		t.Errorf("of 200 calls one at a time, %d went to the replica that took the call before, over %d replicas; want 0, over %d", repeats, len(seen), len(rs))
	}
}

// callLog is ExampleService that counts the attempts of each call that
// reach it, by the request's name (the same in every attempt of a
// call); failing, it answers UNAVAILABLE, and with a delay it waits that
// long (or until the call ends) first.
type callLog struct {
	example.Greeter
	chats   atomic.Int64 // Chat streams opened
	failing atomic.Bool
	delay   atomic.Int64 // nanoseconds
	mu      sync.Mutex
	names   map[string]int
}

func (c *callLog) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	c.mu.Lock()
	c.names[req.GetName()]++
	c.mu.Unlock()
	if c.failing.Load() {
		return nil, status.Error(codes.Unavailable, "failing")
	}
	select {
	case <-time.After(time.Duration(c.delay.Load())):
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return c.Greeter.SayHello(ctx, req)
}

func (c *callLog) Chat(stream example.StreamService_ChatServer) error {
	c.chats.Add(1)
	return c.Greeter.Chat(stream)
}

// calls returns how many calls reached c, and how many of them reached
// it more than once.
func (c *callLog) calls(prefix string) (calls, twice int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, n := range c.names {
		if strings.HasPrefix(name, prefix) {
			calls++
			if n > 1 {
				twice++
			}
		}
	}
	return calls, twice
}

// startLogs serves n callLogs (and the StreamService) and returns them
// and a client with the given policy and options, every replica
// connected.
func startLogs(t *testing.T, n int, policy string, opts ...client.Option) ([]*callLog, *grpc.ClientConn) {
	t.Helper()
	logs := make([]*callLog, n)
	var eps []resolver.Endpoint
	for i := range logs {
		logs[i] = &callLog{names: map[string]int{}}
		_, addr := replicas.Serve(t, func(s *server.Server) {
			example.RegisterExampleServiceServer(s, logs[i])
			example.RegisterStreamServiceServer(s, logs[i])
		})
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr}}})
	}
	r := manual.NewBuilderWithScheme("logs")
	r.InitialState(resolver.State{Endpoints: eps})
	cc, err := client.Dial("logs:///example", append([]client.Option{client.WithBalancer(policy, ""),
		client.WithRegistry(prometheus.NewRegistry()), client.WithDialOptions(grpc.WithResolvers(r))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := example.NewExampleServiceClient(cc)
	for i := 0; slices.ContainsFunc(logs, func(l *callLog) bool { n, _ := l.calls("warm"); return n == 0 }); i++ {
		if i == 2000 {
			t.Fatal("not every replica served a call in 2000")
		}
		if _, err := c.SayHello(context.Background(), &example.Request{Name: fmt.Sprint("warm-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	return logs, cc
}

// callAll makes total SayHello calls named prefix-0, prefix-1, ..., 10
// at a time, and gives each one's error and how long it took to seen.
func callAll(c example.ExampleServiceClient, prefix string, total int, seen func(err error, took time.Duration)) {
	const conc = 10
	var wg sync.WaitGroup
	for g := range conc {
		wg.Go(func() {
			for i := g; i < total; i += conc {
				start := time.Now()
				_, err := c.SayHello(context.Background(), &example.Request{Name: fmt.Sprint(prefix, "-", i)})
				seen(err, time.Since(start))
			}
		})
	}
	wg.Wait()
}

// checkNoneTwice fails the test when a call reached l, the kind replica,
// more than once, or bad of the total calls did what they should not
// (what says what), or no call reached l at all (the test showed
// nothing).
func checkNoneTwice(t *testing.T, l *callLog, kind string, bad int64, total int, what string) {
	t.Helper()
	calls, twice := l.calls("call-")
	t.Logf("the %s replica: %d calls, %d of them twice or more; %d of %d calls %s", kind, calls, twice, bad, total, what)
	if twice > 0 || bad > 0 {
		t.Errorf("%d of the %d calls that reached the %s replica reached it again, and %d of %d calls %s; want every later attempt on another replica, and no call that %s", twice, calls, kind, bad, total, what, what)
	}
	if calls == 0 {
		t.Errorf("no call reached the %s replica; the test shows nothing", kind)
	}
}

// TestRetriesGoToUntriedReplicas: one replica of three answers every call
// with UNAVAILABLE while its health stays SERVING (outlier detection off,
// so that it is not ejected). A retry of a call it failed goes to one of
// the other two: no call reaches it twice, and none fails. (120 calls:
// with one first attempt in three failing, retry throttling stops the
// retries after about 200, as it should once failures are that common;
// outlier detection is what ends them.) Before, the policies drew a
// retry from all three: with random, 11 of the 35 calls that reached the
// failing replica reached it again and 2 calls failed all 4 attempts
// there; with least_request, which the failing replica draws (it has the
// fewest calls in flight), 4 of 44 and 1. p2c_ewma's failure penalty
// kept it away already.
func TestRetriesGoToUntriedReplicas(t *testing.T) {
	for _, policy := range []string{"random", "least_request", "p2c_ewma"} {
		t.Run(policy, func(t *testing.T) {
			logs, cc := startLogs(t, 3, policy, client.WithoutOutlierDetection(),
				client.WithIdempotentMethods("example.ExampleService/SayHello"))
			c := example.NewExampleServiceClient(cc)
			logs[0].failing.Store(true)
			const total = 120
			var failed atomic.Int64
			callAll(c, "call", total, func(err error, _ time.Duration) {
				if err != nil {
					failed.Add(1)
				}
			})
			checkNoneTwice(t, logs[0], "failing", failed.Load(), total, "failed")
		})
	}
}

// TestHedgesGoToUntriedReplicas: one replica of three takes 2 s, the
// others answer at once; calls are hedged after 20 ms, up to 3 attempts.
// With random, a third of the calls go to the slow replica first; their
// hedge goes to another (no call reaches it twice) and answers. Before,
// 20 of the 57 calls that reached it sent it a hedge too, and 5 of 150
// calls, all 3 attempts there, took its 2 s.
func TestHedgesGoToUntriedReplicas(t *testing.T) {
	logs, cc := startLogs(t, 3, "random", client.WithHedging(client.HedgingPolicy{MaxAttempts: 3, Delay: 20 * time.Millisecond}, "example.ExampleService/SayHello"))
	c := example.NewExampleServiceClient(cc)
	logs[0].delay.Store(int64(2 * time.Second))
	const total = 150
	var slow atomic.Int64
	callAll(c, "call", total, func(err error, took time.Duration) {
		if err != nil {
			t.Error(err)
		}
		if took > time.Second {
			slow.Add(1)
		}
	})
	checkNoneTwice(t, logs[0], "slow", slow.Load(), total, "took over 1 s")
}

// TestAStreamIsNotARoundTrip: with p2c_ewma over three replicas, a Chat
// stream held open for 2 s, then closed, does not take the unary calls
// from its replica, while it is open or after: the stream's replica takes
// at least 10 of 200 calls each time (a third is its share). A stream's
// length is not a round trip. Before, the policy learned the stream's
// 2 s as one: its replica took 0 of the 200 calls after it ended (and
// would have for a minute and more; after an hour-long watch, for
// minutes). TestStreamsTeachNothing, with a stubbed clock, has the
// stream's count in flight too.
//
// Only the stream's replica is judged, and the policy's decay is 1 s: on
// a loaded machine one slow call (a replica's goroutine not scheduled
// for tens of milliseconds) starves its replica for as long as its peak
// takes to decay below the others', whichever replica it is; in CI that
// once left another replica without a call for a round. The stream's 2 s
// still keep its replica from every pick for 8 s and more.
func TestAStreamIsNotARoundTrip(t *testing.T) {
	logs, cc := startLogs(t, 3, "p2c_ewma", client.WithBalancer("p2c_ewma", `{"decay":"1s"}`))
	c := example.NewExampleServiceClient(cc)
	held := -1 // the replica that serves the stream
	round := func(when string) {
		t.Helper()
		callAll(c, when, 200, func(err error, _ time.Duration) {
			if err != nil {
				t.Error(err)
			}
		})
		var shares []int
		for _, l := range logs {
			n, _ := l.calls(when + "-")
			shares = append(shares, n)
		}
		t.Logf("%s: calls per replica %v (the stream's: %d)", when, shares, held)
		if held >= 0 && shares[held] < 10 {
			t.Errorf("%s: calls per replica %v of 200; want the stream's, %d, to take at least 10", when, shares, held)
		}
	}
	round("before")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chat, err := example.NewStreamServiceClient(cc).Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.Send(&example.Request{Name: "held"}); err != nil {
		t.Fatal(err)
	}
	if _, err := chat.Recv(); err != nil {
		t.Fatal(err)
	}
	held = slices.IndexFunc(logs, func(l *callLog) bool { return l.chats.Load() == 1 })
	round("stream-open")
	time.Sleep(2 * time.Second)
	chat.CloseSend()
	if _, err := chat.Recv(); err != io.EOF {
		t.Fatalf("the stream ended with %v; want io.EOF", err)
	}
	round("stream-closed")
}

// TestHeldStreamsAreNotCalls: with least_request over three replicas, 30
// Chat streams held open are spread over the replicas by their own count
// (8 to 12 each), and with one more stream open on one replica, calls made
// one at a time still reach every replica (at least 60 of 300 each; 100
// is the share). Before, streams counted as calls in flight: the replica
// holding the extra stream lost every comparison and took 0 of the 300
// calls.
func TestHeldStreamsAreNotCalls(t *testing.T) {
	logs, cc := startLogs(t, 3, "least_request")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hold := func() {
		t.Helper()
		chat, err := example.NewStreamServiceClient(cc).Chat(ctx)
		if err == nil {
			err = chat.Send(&example.Request{Name: "held"})
		}
		if err == nil {
			_, err = chat.Recv()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 30 {
		hold()
	}
	var chats []int64
	for _, l := range logs {
		chats = append(chats, l.chats.Load())
	}
	if slices.Min(chats) < 8 || slices.Max(chats) > 12 {
		t.Errorf("30 streams opened: %v per replica; want 8 to 12 each (the fewer streams of two drawn)", chats)
	}
	hold()
	c := example.NewExampleServiceClient(cc)
	for i := range 300 {
		if _, err := c.SayHello(context.Background(), &example.Request{Name: fmt.Sprint("seq-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var calls []int
	for _, l := range logs {
		n, _ := l.calls("seq-")
		calls = append(calls, n)
	}
	t.Logf("streams per replica %v, then one more; calls one at a time per replica %v", chats, calls)
	if slices.Min(calls) < 60 {
		t.Errorf("calls one at a time, with 31 streams open over 3 replicas: %v per replica of 300; want each at least 60", calls)
	}
}
