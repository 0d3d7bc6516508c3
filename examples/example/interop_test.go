package example_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// python is Debian's interpreter, which owns python3-grpcio; a python3
// earlier on PATH may lack it. scripts/setup.sh installs it.
const python = "/usr/bin/python3"

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestGoClientPythonServer calls the Python grpcio example server with
// kuberpc's Go client: SayHello, the streaming methods and health.
func TestGoClientPythonServer(t *testing.T) {
	port := freePort(t)
	cmd := exec.Command(python, filepath.Join("python", "server.py"))
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "METRICS_PORT=-1", "DRAIN_DELAY=100ms", "DRAIN_TIMEOUT=1s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the Python server (run scripts/setup.sh to install python3-grpcio): %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("Python server exited before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Python server did not start in 30s")
	}

	cc, err := client.Dial(fmt.Sprintf("dns:///127.0.0.1:%d", port), client.WithRegistry(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := context.Background()
	resp, err := example.NewExampleServiceClient(cc).SayHello(ctx, &example.Request{Id: 7, Name: "Go"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMessage() != "Hello, Go!" {
		t.Errorf("Python SayHello = %q, want %q", resp.GetMessage(), "Hello, Go!")
	}
	h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "example.ExampleService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Python health = %v, %v; want SERVING", h, err)
	}
	sc := example.NewStreamServiceClient(cc)
	gs, err := sc.Greetings(ctx, &example.Request{Id: 3, Name: "stream"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		r, err := gs.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.GetMessage())
	}
	if want := "Hello, stream! (1/3)|Hello, stream! (2/3)|Hello, stream! (3/3)"; strings.Join(got, "|") != want {
		t.Errorf("Greetings = %q, want %q", got, want)
	}
	if gs, err = sc.Greetings(ctx, &example.Request{Id: -1}); err == nil {
		_, err = gs.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Greetings(id=-1) on Python = %v, want INVALID_ARGUMENT", err)
	}
}

// TestPythonClientGoServer calls the kuberpc Go server with the Python
// grpc stubs generated from the same proto.
func TestPythonClientGoServer(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = time.Millisecond
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(lis); close(done) }()
	defer func() { srv.Shutdown(context.Background()); <-done }()

	out, err := exec.Command(python, filepath.Join("python", "client.py"), lis.Addr().String(), "Python", "interop").CombinedOutput()
	if err != nil {
		t.Fatalf("Python client: %v\n%s", err, out)
	}
	if got, want := string(out), "Hello, Python!\nHello, interop!\n"; got != want {
		t.Errorf("Python client printed %q, want %q", got, want)
	}
}
