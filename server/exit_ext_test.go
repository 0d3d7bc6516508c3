package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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
	if err := srv.Run(context.Background()); err != nil {
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

// TestDrainEndsOnTimeWithAStuckHandler: a handler that ignores
// cancellation does not keep the process past DRAIN_DELAY + DRAIN_TIMEOUT
// + 1s; the process exits 0 and one log line names the handler left
// behind.
func TestDrainEndsOnTimeWithAStuckHandler(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: the race detector otherwise sleeps 1s at exit.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", stuckServerEnv+"=1", "PORT=0", "METRICS_PORT=-1", "DRAIN_DELAY=200ms", "DRAIN_TIMEOUT=500ms")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				lines <- rec
			}
		}
		close(lines)
	}()
	var addr string
	var logs []map[string]any
	for addr == "" {
		select {
		case rec, ok := <-lines:
			if !ok {
				t.Fatal("the server exited before serving")
			}
			logs = append(logs, rec)
			if rec["msg"] == "serving gRPC" {
				addr, _ = rec["addr"].(string)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the server did not start")
		}
	}
	_, port, _ := strings.Cut(addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(addr, ":")
	}
	cc := dial(t, "127.0.0.1:"+strings.TrimPrefix(port, ":"))
	go example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "stuck"})
	time.Sleep(200 * time.Millisecond) // the call reaches its handler

	begin := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() {
		for rec := range lines {
			logs = append(logs, rec)
		}
		exited <- cmd.Wait()
	}()
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
	for _, rec := range logs {
		if h, _ := rec["handlers"].(string); strings.Contains(h, "example.ExampleService/SayHello×1") && strings.Contains(rec["msg"].(string), "left behind") {
			named++
		}
	}
	if named != 1 {
		t.Errorf("%d log lines name the handler left behind; want 1", named)
	}
}
