package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/loadgen"
	"github.com/kuberpc/kuberpc/server"
)

// burner's SayHello burns work of CPU, as a CPU-bound handler does.
type burner struct {
	example.Greeter
	work time.Duration
}

var sink atomic.Uint64

func (b burner) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	end := time.Now().Add(b.work)
	x := uint64(1)
	for time.Now().Before(end) {
		for range 1000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	sink.Add(x)
	return b.Greeter.SayHello(ctx, req)
}

// overloadServer is one of the servers compared under overload.
type overloadServer struct {
	name  string
	start func(impl example.ExampleServiceServer) (addr string, stop func(), err error)
}

func overloadServers() []overloadServer {
	kuberpc := func(adaptive bool, maxInFlight int) func(example.ExampleServiceServer) (string, func(), error) {
		return func(impl example.ExampleServiceServer) (string, func(), error) {
			cfg := server.DefaultConfig()
			cfg.Drain.PropagationDelay = 0
			cfg.Limits.AdaptiveShedding = adaptive
			cfg.Limits.MaxInFlight = maxInFlight
			srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
				server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err != nil {
				return "", nil, err
			}
			example.RegisterExampleServiceServer(srv, impl)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			go srv.Serve(lis)
			return lis.Addr().String(), func() { srv.Shutdown(context.Background()) }, nil
		}
	}
	return []overloadServer{
		{"raw grpc-go", func(impl example.ExampleServiceServer) (string, func(), error) {
			gs := grpc.NewServer()
			example.RegisterExampleServiceServer(gs, impl)
			hs := health.NewServer()
			healthpb.RegisterHealthServer(gs, hs)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			go gs.Serve(lis)
			return lis.Addr().String(), gs.Stop, nil
		}},
		{"kuberpc MAX_IN_FLIGHT=16", kuberpc(false, 16)},
		{"kuberpc adaptive", kuberpc(true, 0)},
	}
}

// OverloadResult is one server at one offered load.
type OverloadResult struct {
	Server              string
	Offered, Goodput    float64 // calls per second
	Capacity            float64 // its own capacity, calls per second
	P99, UnloadedP99    time.Duration
	Shed, Failed        int
	HealthOK, HealthAll int
}

// Overload measures, for each server with a CPU-bound handler of work:
// its capacity (closed loop, 32 callers) and unloaded p99 (1 caller),
// then an open loop at each multiple of the capacity for d: goodput, p99
// of the calls that succeeded, and health checks answered within 1 s
// (probed every 100 ms on their own connection).
func Overload(work, d time.Duration, multiples []float64, progress io.Writer) ([]OverloadResult, error) {
	var out []OverloadResult
	for _, s := range overloadServers() {
		addr, stop, err := s.start(burner{work: work})
		if err != nil {
			return nil, err
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			stop()
			return nil, err
		}
		c := example.NewExampleServiceClient(cc)
		capacity, _ := closedLoop(c, 32, d)
		_, unloaded := closedLoop(c, 1, d)
		for _, m := range multiples {
			rate := int(capacity * m)
			hcc, _ := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			ok, all := probeHealth(healthpb.NewHealthClient(hcc), d)
			// Callers give up after a second, as real ones do: a call
			// answered later is not goodput.
			res, err := loadgen.Run(context.Background(), cc, loadgen.Options{Rate: rate, Duration: d, Deadline: time.Second})
			hok, hall := <-ok, <-all
			hcc.Close()
			if err != nil {
				cc.Close()
				stop()
				return nil, err
			}
			r := OverloadResult{Server: s.name, Offered: float64(rate), Capacity: capacity, UnloadedP99: unloaded,
				Goodput: float64(len(res.Latencies)) / d.Seconds(), P99: res.Percentile(99), Failed: res.Failed(), HealthOK: hok, HealthAll: hall}
			out = append(out, r)
			fmt.Fprintf(progress, "overload %-26s ×%.0f: offered %5.0f/s goodput %5.0f/s (capacity %5.0f) p99 %v (unloaded %v) failed %d health %d/%d\n",
				s.name, m, r.Offered, r.Goodput, capacity, r.P99.Round(time.Microsecond), unloaded.Round(time.Microsecond), r.Failed, hok, hall)
			time.Sleep(500 * time.Millisecond) // let the backlog drain
		}
		cc.Close()
		stop()
	}
	return out, nil
}

// closedLoop runs conc callers for d and returns calls per second and p99.
func closedLoop(c example.ExampleServiceClient, conc int, d time.Duration) (float64, time.Duration) {
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) {
				t := time.Now()
				if _, err := c.SayHello(context.Background(), &example.Request{}); err == nil {
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(len(lat)) / d.Seconds(), percentile(lat, 99)
}

// probeHealth checks health every 100 ms for d, each with a 1 s timeout
// (a probe's), and sends how many were answered SERVING and how many were
// made.
func probeHealth(hc healthpb.HealthClient, d time.Duration) (<-chan int, <-chan int) {
	okc, allc := make(chan int, 1), make(chan int, 1)
	go func() {
		var ok, all atomic.Int32
		var wg sync.WaitGroup
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			wg.Add(1)
			all.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		okc <- int(ok.Load())
		allc <- int(all.Load())
	}()
	return okc, allc
}
