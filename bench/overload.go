package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/loadgen"
	"github.com/kuberpc/kuberpc/server"
)

// The overload suite runs each server in a child process of its own,
// pinned to one core with GOMAXPROCS=1 (a pod with one CPU), while the
// load generator and the health prober run pinned to the other cores: on
// a small machine a server sharing its cores with the client that floods
// it measures the client as much as itself, and its CPU signal would be
// the client's too.

// overloadServerCommand is the argument with which the bench binary runs
// as the overload suite's server (see RunSubcommand).
const overloadServerCommand = "overload-server"

// HandlerKind is the work an overload handler does.
type HandlerKind string

const (
	// CPUBound handlers burn 1 ms of CPU.
	CPUBound HandlerKind = "cpu"
	// IOBound handlers hold one of ioSlots downstream connections (a
	// database pool, say) for 20 ms, waiting for one when all are busy:
	// capacity ioSlots/20ms, and a backlog that waits in the pool.
	IOBound HandlerKind = "io"
)

const (
	cpuWork = time.Millisecond
	ioWork  = 20 * time.Millisecond
	ioSlots = 16
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

// pooled's SayHello holds one of a fixed number of downstream connections
// for work, waiting for one (until the call's context ends) when all are
// busy, as an I/O-bound handler in front of a connection pool does.
type pooled struct {
	example.Greeter
	slots chan struct{}
	work  time.Duration
}

func (p pooled) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	defer func() { <-p.slots }()
	t := time.NewTimer(p.work)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return p.Greeter.SayHello(ctx, req)
}

func overloadHandler(kind HandlerKind) (example.ExampleServiceServer, error) {
	switch kind {
	case CPUBound:
		return burner{work: cpuWork}, nil
	case IOBound:
		return pooled{slots: make(chan struct{}, ioSlots), work: ioWork}, nil
	}
	return nil, fmt.Errorf("unknown handler kind %q", kind)
}

// overloadServer is one of the servers compared under overload: raw, or
// a kuberpc server configured by env, as a pod is.
type overloadServer struct {
	name string
	raw  bool
	env  []string
}

// overloadServers are the servers the suite compares: raw grpc-go, kuberpc
// with the old static limit, kuberpc with its defaults (adaptive
// shedding), and the defaults again, the A/A row that shows the noise.
var overloadServers = []overloadServer{
	{name: "raw grpc-go", raw: true},
	{name: "kuberpc MAX_IN_FLIGHT=16", env: []string{"MAX_IN_FLIGHT=16", "ADAPTIVE_SHEDDING=false"}},
	{name: OverloadDefault},
	{name: OverloadDefault + " (A/A)"},
}

// OverloadDefault names the kuberpc server with its default configuration
// in OverloadResult.Server.
const OverloadDefault = "kuberpc default"

// OverloadProfileEnv names the environment variable that, set to a path
// prefix, makes each kuberpc overload server write a CPU profile to
// PREFIX.PID: where a loaded server's core goes.
const OverloadProfileEnv = "KUBERPC_OVERLOAD_CPUPROFILE"

// serveOverload is the child process: it serves kind's handler on a
// loopback port, prints the address on stdout, and stops when stdin
// closes.
func serveOverload(args []string) error {
	fs := flag.NewFlagSet(overloadServerCommand, flag.ContinueOnError)
	raw := fs.Bool("raw", false, "serve on a plain grpc.Server")
	kind := fs.String("handler", string(CPUBound), "cpu or io")
	cpu := fs.Int("cpu", -1, "the core to pin the process to (-1: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpu >= 0 {
		if err := pin(os.Getpid(), *cpu); err != nil {
			return err
		}
	}
	impl, err := overloadHandler(HandlerKind(*kind))
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var stop func()
	if *raw {
		gs := grpc.NewServer()
		example.RegisterExampleServiceServer(gs, impl)
		healthpb.RegisterHealthServer(gs, health.NewServer())
		go gs.Serve(lis)
		stop = gs.Stop
	} else {
		cfg, err := server.LoadConfig(nil, os.LookupEnv)
		if err != nil {
			return err
		}
		srv, err := server.New(server.WithConfig(cfg))
		if err != nil {
			return err
		}
		example.RegisterExampleServiceServer(srv, impl)
		go srv.Serve(lis)
		stop = func() { srv.Shutdown(context.Background()) }
	}
	if path := os.Getenv(OverloadProfileEnv); path != "" && !*raw {
		f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("ADDR %s\n", lis.Addr())
	io.Copy(io.Discard, os.Stdin)
	stop()
	return nil
}

func startOverloadServer(s overloadServer, kind HandlerKind, cpu int) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{overloadServerCommand, "-handler", string(kind), "-cpu", strconv.Itoa(cpu)}
	if s.raw {
		args = append(args, "-raw")
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "DRAIN_DELAY=0", "LOG_LEVEL=error")
	if cpu >= 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	cmd.Env = append(cmd.Env, s.env...)
	c, _, err := startServing(cmd)
	if err != nil {
		return nil, fmt.Errorf("overload server %s: %w", s.name, err)
	}
	return c, nil
}

// peakRSS is the child's peak resident set (VmHWM), in bytes.
func (c *child) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// pin sets the CPU affinity of every thread of process pid to cpus
// (threads started later inherit it from the thread that starts them).
func pin(pid int, cpus ...int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin thread %d to CPUs %v: %w", tid, cpus, err)
		}
	}
	return nil
}

// OverloadResult is one server at one offered load.
type OverloadResult struct {
	Server  string
	Handler HandlerKind
	// Multiple of the server's capacity offered, and the load itself.
	Multiple, Offered float64
	// Goodput is successful calls per second (answered within their 1 s
	// deadline); Capacity is the server's own, measured closed-loop.
	Goodput, Capacity float64
	// P99 of the calls that succeeded, and the server's unloaded p99.
	P99, UnloadedP99 time.Duration
	// Codes of every call.
	Codes map[codes.Code]int
	// HealthOK of HealthAll checks were answered SERVING within 1 s.
	HealthOK, HealthAll int
	// PeakRSS of the server process over its whole run, in bytes.
	PeakRSS int64
	// Pinned is whether server and load ran on separate cores.
	Pinned bool
}

// Overload measures each server with a handler of kind, in its own
// process on its own core. Capacity is the raw grpc-go server's (closed
// loop, 64 callers); each server's unloaded p99 is its own (1 caller);
// then each gets an open loop for d at each multiple of the capacity: goodput, p99 of the calls that succeeded, health checks
// answered within 1 s (a probe's timeout; probed every 100 ms on a
// connection of their own), and the process's peak RSS.
func Overload(kind HandlerKind, d time.Duration, multiples []float64, progress io.Writer) ([]OverloadResult, error) {
	serverCPU, pinned := -1, runtime.NumCPU() >= 2
	if pinned {
		// The server gets the last core; this process every other one.
		serverCPU = runtime.NumCPU() - 1
		var rest []int
		for c := range serverCPU {
			rest = append(rest, c)
		}
		if err := pin(os.Getpid(), rest...); err != nil {
			return nil, err
		}
		defer func() {
			var all []int
			for c := range runtime.NumCPU() {
				all = append(all, c)
			}
			pin(os.Getpid(), all...)
		}()
	}
	// Capacity is the raw server's: every server is offered the same load.
	capacity, err := measureCapacity(overloadServers[0], kind, serverCPU, d)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "overload %s: capacity %.0f calls/s\n", kind, capacity)
	var out []OverloadResult
	for _, s := range overloadServers {
		res, err := overloadOne(s, kind, serverCPU, capacity, d, multiples, progress)
		if err != nil {
			return nil, fmt.Errorf("%s, %s-bound: %w", s.name, kind, err)
		}
		for i := range res {
			res[i].Pinned = pinned
		}
		out = append(out, res...)
	}
	return out, nil
}

// measureCapacity is s's throughput in a closed loop of 64 callers, which
// keeps every server in the suite busy without overloading it past its
// callers' patience.
func measureCapacity(s overloadServer, kind HandlerKind, cpu int, d time.Duration) (_ float64, err error) {
	c, err := startOverloadServer(s, kind, cpu)
	if err != nil {
		return 0, err
	}
	defer func() {
		if serr := c.stop(); err == nil && serr != nil {
			err = serr
		}
	}()
	cc, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	ec := example.NewExampleServiceClient(cc)
	closedLoop(ec, 4, d/2) // warm up
	capacity, _ := closedLoop(ec, 64, d)
	if capacity == 0 {
		return 0, errors.New("no call succeeded in the closed loop")
	}
	return capacity, nil
}

func overloadOne(s overloadServer, kind HandlerKind, cpu int, capacity float64, d time.Duration, multiples []float64, progress io.Writer) (_ []OverloadResult, err error) {
	c, err := startOverloadServer(s, kind, cpu)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := c.stop(); err == nil && serr != nil {
			err = serr
		}
	}()
	cc, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ec := example.NewExampleServiceClient(cc)
	closedLoop(ec, 4, d/2) // warm up
	_, unloaded := closedLoop(ec, 1, d)
	var out []OverloadResult
	for _, m := range multiples {
		rate := int(capacity * m)
		hcc, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		ok, all := probeHealth(healthpb.NewHealthClient(hcc), d)
		// Callers give up after a second, as real ones do: a call
		// answered later is not goodput.
		res, err := loadgen.Run(context.Background(), cc, loadgen.Options{Rate: rate, Duration: d, Deadline: time.Second})
		hok, hall := <-ok, <-all
		hcc.Close()
		if err != nil {
			return nil, err
		}
		goodput, p99 := steady(res, d)
		r := OverloadResult{Server: s.name, Handler: kind, Multiple: m, Offered: float64(rate), Capacity: capacity,
			UnloadedP99: unloaded, Goodput: goodput, P99: p99,
			Codes: res.Codes, HealthOK: hok, HealthAll: hall, PeakRSS: c.peakRSS()}
		out = append(out, r)
		fmt.Fprintf(progress, "overload %-3s %-25s ×%.1f: offered %5.0f/s goodput %5.0f/s (capacity %5.0f) p99 %v (unloaded %v) codes %v health %d/%d peak RSS %d MiB\n",
			kind, s.name, m, r.Offered, r.Goodput, capacity, r.P99.Round(time.Microsecond), unloaded.Round(time.Microsecond),
			res.Codes, hok, hall, r.PeakRSS>>20)
		time.Sleep(time.Second) // let the backlog drain and the limit recover
	}
	return out, nil
}

// steady returns the goodput and the p99 of the successful calls over
// the seconds of a run of d after its first (the first third of a run
// shorter than 3 s): the steady state, not the limit's first reaction to
// the step (which the p99 of all calls, also recorded, includes), nor
// the backlog a server builds in its first second and then answers late
// (which would count as goodput a raw server cannot sustain).
func steady(res loadgen.Result, d time.Duration) (float64, time.Duration) {
	skip := min(time.Second, d/3)
	first := int(skip / time.Second)
	if skip%time.Second != 0 {
		// Sub-second runs: the timeline has one second; use it all.
		first = 0
		skip = 0
	}
	var lat []time.Duration
	for _, s := range res.Timeline[min(first, len(res.Timeline)):] {
		lat = append(lat, s.Latencies...)
	}
	return float64(len(lat)) / (d - skip).Seconds(), percentile(lat, 99)
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
