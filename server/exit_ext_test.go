package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// stuckServerEnv makes the test binary run runStuckServer instead of the
// tests.
const stuckServerEnv = "KUBERPC_TEST_STUCK_SERVER"

// signalContextEnv makes runStuckServer pass Run a context that a
// SIGTERM or SIGINT ends.
const signalContextEnv = "KUBERPC_TEST_SIGNAL_CONTEXT"

// stuckGreeter's SayHello ignores its context and never returns.
type stuckGreeter struct{ example.Greeter }

func (stuckGreeter) SayHello(context.Context, *example.Request) (*example.Response, error) {
	select {} // ignores cancellation, as a handler blocked in a library call would
}

// runStuckServer is a server process as a user's main writes it: Run, and
// exit 1 on an error.
func runStuckServer() int {
	srv, err := serverFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	example.RegisterExampleServiceServer(srv, stuckGreeter{})
	ctx := context.Background()
	if os.Getenv(signalContextEnv) != "" {
		// As a main that handles the signals itself might.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
		defer stop()
	}
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	return 0
}

// serverFromEnv is the Server a child process of these tests runs,
// configured from its environment as a pod's is.
func serverFromEnv() (*server.Server, error) {
	cfg, err := server.LoadConfig(nil, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	return server.New(server.WithConfig(cfg))
}

// stuckProcess is runStuckServer running in a child process.
type stuckProcess struct {
	cmd   *exec.Cmd
	addr  string              // where it serves gRPC
	lines chan map[string]any // its log records after the one saying where
	logs  []map[string]any    // those read so far
}

// startStuckServer starts runStuckServer in a child process with env
// added to its environment, waits until it serves, and calls SayHello
// once on it: the call stays in its handler.
func startStuckServer(t *testing.T, env ...string) *stuckProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: the race detector otherwise sleeps 1s at exit.
	cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0", stuckServerEnv+"=1", "PORT=0", "METRICS_PORT=-1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	p := &stuckProcess{cmd: cmd, lines: make(chan map[string]any, 100)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				p.lines <- rec
			}
		}
		close(p.lines)
	}()
	for p.addr == "" {
		select {
		case rec, ok := <-p.lines:
			if !ok {
				t.Fatal("the server exited before serving")
			}
			p.logs = append(p.logs, rec)
			if rec["msg"] == "serving gRPC" {
				p.addr, _ = rec["addr"].(string)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the server did not start")
		}
	}
	_, port, _ := strings.Cut(p.addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(p.addr, ":")
	}
	cc := dial(t, "127.0.0.1:"+strings.TrimPrefix(port, ":"))
	go example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "stuck"})
	time.Sleep(200 * time.Millisecond) // the call reaches its handler
	return p
}

// wait reads the rest of the process's log and then waits for it to
// exit.
func (p *stuckProcess) wait() <-chan error {
	exited := make(chan error, 1)
	go func() {
		for rec := range p.lines {
			p.logs = append(p.logs, rec)
		}
		exited <- p.cmd.Wait()
	}()
	return exited
}

// TestDrainEndsOnTimeWithAStuckHandler: a handler that ignores
// cancellation does not keep the process past DRAIN_DELAY + DRAIN_TIMEOUT
// + 1s; the process exits 0 and one log line names the handler left
// behind.
func TestDrainEndsOnTimeWithAStuckHandler(t *testing.T) {
	t.Parallel()
	p := startStuckServer(t, "DRAIN_DELAY=200ms", "DRAIN_TIMEOUT=500ms")
	cmd := p.cmd
	begin := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	exited := p.wait()
	bound := 200*time.Millisecond + 500*time.Millisecond + time.Second
	select {
	case err := <-exited:
		took := time.Since(begin)
		t.Logf("exited %v after SIGTERM (bound %v)", took.Round(time.Millisecond), bound)
		if err != nil {
			t.Errorf("exit: %v; want status 0 after a drain", err)
		}
		if took > bound {
			t.Errorf("the process exited %v after SIGTERM; want within DRAIN_DELAY + DRAIN_TIMEOUT + 1s = %v", took, bound)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the process did not exit 30s after SIGTERM")
	}
	var named int
	for _, rec := range p.logs {
		if h, _ := rec["handlers"].(string); strings.Contains(h, "example.ExampleService/SayHello×1") && strings.Contains(rec["msg"].(string), "left behind") {
			named++
		}
	}
	if named != 1 {
		t.Errorf("%d log lines name the handler left behind; want 1", named)
	}
}

// TestOneSignalEndingRunsContextToo: with Run's context ended by the
// same signal (signal.NotifyContext in main), one SIGTERM is one signal:
// the drain runs its course and the process exits 0, every time. (Had
// Run counted the context as the first signal, the one its own channel
// still held would have been the second; os/signal's delivery order made
// that rare, not impossible.)
func TestOneSignalEndingRunsContextToo(t *testing.T) {
	t.Parallel()
	for range 5 {
		p := startStuckServer(t, signalContextEnv+"=1", "DRAIN_DELAY=100ms", "DRAIN_TIMEOUT=200ms")
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.wait():
			if err != nil {
				t.Errorf("exit: %v; want status 0 after the drain", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the process did not exit 20s after SIGTERM")
		}
		for _, rec := range p.logs {
			if rec["msg"] == "drain cut short, cancelling remaining RPCs" {
				t.Errorf("one SIGTERM cut the drain: %v", rec)
			}
		}
	}
}

// TestSecondSignalStopsAtOnce: a second SIGTERM or SIGINT during the
// drain, in its propagation delay or while it waits for a handler (here
// one that ignores its context), stops the process within a second
// instead of the minute the drain would take, with exit status 1 and a
// log line giving the cause.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"in the propagation delay", []string{"DRAIN_DELAY=30s", "DRAIN_TIMEOUT=30s"}},
		{"waiting for the handler", []string{"DRAIN_DELAY=0", "DRAIN_TIMEOUT=60s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startStuckServer(t, tc.env...)
			p.cmd.Process.Signal(syscall.SIGTERM)
			for draining := false; !draining; {
				select {
				case rec, ok := <-p.lines:
					if !ok {
						t.Fatal("the process exited after one SIGTERM")
					}
					p.logs = append(p.logs, rec)
					draining = strings.HasPrefix(rec["msg"].(string), "draining")
				case <-time.After(10 * time.Second):
					t.Fatal("no drain 10s after SIGTERM")
				}
			}
			time.Sleep(100 * time.Millisecond)
			begin := time.Now()
			p.cmd.Process.Signal(syscall.SIGINT)
			select {
			case err := <-p.wait():
				took := time.Since(begin)
				t.Logf("exited %v after the second signal: %v", took.Round(time.Millisecond), err)
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Errorf("exit: %v; want status 1 (the drain was cut)", err)
				}
				if took > 2*time.Second {
					t.Errorf("exited %v after the second signal; want within 0.5s and a margin", took)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the process did not exit 20s after the second signal")
			}
			var cut int
			for _, rec := range p.logs {
				if rec["msg"] == "drain cut short, cancelling remaining RPCs" && strings.Contains(rec["cause"].(string), "second signal during the drain: interrupt") {
					cut++
				}
			}
			if cut != 1 {
				t.Errorf("%d log lines say the second signal cut the drain; want 1", cut)
			}
		})
	}
}
