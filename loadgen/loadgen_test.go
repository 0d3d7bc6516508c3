package loadgen_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
	"github.com/kuberpc/kuberpc/loadgen"
	"github.com/kuberpc/kuberpc/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T, cfg server.Config) (*server.Server, string) {
	t.Helper()
	return replicas.Serve(t, func(s *server.Server) {
		example.RegisterExampleServiceServer(s, example.Greeter{})
		example.RegisterStreamServiceServer(s, example.Greeter{})
	}, server.WithConfig(cfg))
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestRunRecordsEveryOutcome(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = 0
	_, addr := serve(t, cfg)
	var progress bytes.Buffer
	res, err := loadgen.Run(context.Background(), dial(t, addr), loadgen.Options{Rate: 200, Duration: 1500 * time.Millisecond, Streams: 3, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Codes[codes.OK]; got != 300 || res.Failed() != 0 {
		t.Errorf("calls OK %d failed %d; want 300 and 0 (200/s for 1.5s)", got, res.Failed())
	}
	if len(res.Timeline) != 2 || res.Timeline[0].Sent != 200 || res.Timeline[1].Sent != 100 {
		t.Errorf("timeline %+v; want 200 then 100 sent", res.Timeline)
	}
	if res.Peers["127.0.0.1"] != 300 {
		t.Errorf("answered by %v; want 127.0.0.1 for all 300", res.Peers)
	}
	if res.StreamsOpened != 3 || len(res.StreamEnds) != 0 || res.HungStreams != 0 || res.StreamMessages < 3*10 {
		t.Errorf("streams opened %d ended %v hung %d messages %d; want 3 open throughout, ≥ 30 messages", res.StreamsOpened, res.StreamEnds, res.HungStreams, res.StreamMessages)
	}
	if !strings.Contains(progress.String(), "  1s  sent   200  OK=200") {
		t.Errorf("progress:\n%s", progress.String())
	}
	var sum bytes.Buffer
	res.Summary(&sum)
	for _, want := range []string{"unary calls: 300, failed 0", "127.0.0.1", "100.0%", "streams: opened 3"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
}

// TestRunSeesAServerGoAway: a server that drains mid-load ends the
// streams with UNAVAILABLE (they are re-opened and fail to connect), and
// calls fail: the outcomes say so by code.
func TestRunSeesAServerGoAway(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay, cfg.Drain.Timeout = 0, 100*time.Millisecond
	srv, addr := serve(t, cfg)
	go func() {
		time.Sleep(400 * time.Millisecond)
		srv.Shutdown(context.Background())
	}()
	res, err := loadgen.Run(context.Background(), dial(t, addr), loadgen.Options{Rate: 100, Duration: time.Second, Streams: 2, Deadline: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Codes[codes.OK] == 0 || res.Failed() == 0 {
		t.Errorf("codes %v; want some OK before the drain and failures after", res.Codes)
	}
	if res.StreamEnds[codes.Unavailable] == 0 {
		t.Errorf("stream ends %v; want UNAVAILABLE when the server drains", res.StreamEnds)
	}
	// Each failing code keeps its first failure, after the drain began.
	for c := range res.Codes {
		f, ok := res.FirstFailures[c]
		if c == codes.OK {
			if ok {
				t.Errorf("a first failure recorded for OK: %+v", f)
			}
			continue
		}
		if !ok || f.Err == "" || f.At < 300*time.Millisecond {
			t.Errorf("first failure of %s: %+v, %v; want its message, scheduled after the drain began at 400ms", c, f, ok)
		}
	}
	var sum bytes.Buffer
	res.Summary(&sum)
	if !strings.Contains(sum.String(), "first Unavailable, scheduled at 0.") {
		t.Errorf("summary lacks the first UNAVAILABLE failure:\n%s", sum.String())
	}
}

// TestStopEndsTheLoadAndKeepsCallsInFlight: closing Stop ends the load
// early, and the calls it started still finish (none is cancelled).
func TestStopEndsTheLoadAndKeepsCallsInFlight(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = 0
	_, addr := serve(t, cfg)
	stop := make(chan struct{})
	time.AfterFunc(500*time.Millisecond, func() { close(stop) })
	start := time.Now()
	res, err := loadgen.Run(context.Background(), dial(t, addr), loadgen.Options{Rate: 200, Duration: time.Minute, Streams: 2, Stop: stop})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Run returned %v after start; want soon after Stop (0.5s)", took)
	}
	if res.Failed() != 0 || res.Codes[codes.OK] < 50 || len(res.StreamEnds) != 0 {
		t.Errorf("codes %v, stream ends %v; want only OK (about 100) and no stream ended by the stop", res.Codes, res.StreamEnds)
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	if _, err := loadgen.Run(context.Background(), nil, loadgen.Options{}); err == nil {
		t.Error("Run with no duration succeeded")
	}
	if _, err := loadgen.Run(context.Background(), nil, loadgen.Options{Duration: time.Second, Rate: -1}); err == nil {
		t.Error("Run with a negative rate succeeded")
	}
	// Past a billion calls a second the interval between calls was 0: Run
	// started goroutines as fast as it could for the whole duration.
	for _, o := range []loadgen.Options{{Duration: time.Second, Rate: 2_000_000_000}, {Duration: time.Second, Rate: loadgen.MaxRate + 1}} {
		if _, err := loadgen.Run(context.Background(), nil, o); err == nil || !strings.Contains(err.Error(), "at most 1000000") {
			t.Errorf("Run at rate %d: %v; want an error giving the bound", o.Rate, err)
		}
	}
	if _, err := loadgen.Run(context.Background(), nil, loadgen.Options{Duration: time.Second, Streams: loadgen.MaxStreams + 1}); err == nil || !strings.Contains(err.Error(), "at most 100000") {
		t.Errorf("Run with %d streams: %v; want an error giving the bound", loadgen.MaxStreams+1, err)
	}
}

// TestRunMakesTheCallOfOptions: Options.Call replaces SayHello as the
// unary call, any method of any service: each of its calls is scheduled,
// given its index, and counted with the address that answered (the
// options it is given record it).
func TestRunMakesTheCallOfOptions(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = 0
	_, addr := serve(t, cfg)
	cc := dial(t, addr)
	var mu sync.Mutex
	seen := map[int]bool{}
	res, err := loadgen.Run(context.Background(), cc, loadgen.Options{Rate: 100, Duration: 500 * time.Millisecond,
		Call: func(ctx context.Context, i int, opts ...grpc.CallOption) error {
			mu.Lock()
			seen[i] = true
			mu.Unlock()
			svc := "" // the server: SERVING
			if i%2 == 1 {
				svc = "example.NoSuch" // NOT_FOUND
			}
			_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc}, opts...)
			return err
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Codes[codes.OK] != 25 || res.Codes[codes.NotFound] != 25 || len(seen) != 50 || !seen[0] || !seen[49] {
		t.Errorf("codes %v, %d distinct indexes; want 50 health checks, 25 OK and 25 NOT_FOUND, indexes 0-49", res.Codes, len(seen))
	}
	if res.Peers["127.0.0.1"] != 25 {
		t.Errorf("answered by %v; want 127.0.0.1 for the 25 that succeeded", res.Peers)
	}
	if f := res.FirstFailures[codes.NotFound]; !strings.Contains(f.Err, "unknown service") {
		t.Errorf("first NOT_FOUND %+v; want the health service's answer", f)
	}
}
