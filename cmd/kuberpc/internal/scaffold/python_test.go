package scaffold_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/scaffold"
	"github.com/kuberpc/kuberpc/examples/example"
)

// TestScaffoldedPythonDrainsLikeTheReference: a Python service from
// `kuberpc new --lang python` reads Go durations, serves /healthz, and on
// SIGTERM turns NOT_SERVING, then ends health Watch streams so the drain
// finishes long before DRAIN_TIMEOUT, exiting 0.
func TestScaffoldedPythonDrainsLikeTheReference(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	dir := t.TempDir()
	path, err := scaffold.NewPython(context.Background(), scaffold.Options{Name: "pysvc", Dir: dir,
		Protos: []scaffold.File{{Name: "example.proto", Content: example.Proto}}}, scaffold.PythonRuntime())
	if err != nil {
		t.Fatal(err)
	}
	runtime, err := os.ReadFile(filepath.Join(path, "python", "kuberpc_runtime.py"))
	if err != nil || string(runtime) != string(example.PythonRuntime) {
		t.Fatalf("the service's kuberpc_runtime.py differs from the reference's (err %v)", err)
	}
	cmd := exec.Command("/usr/bin/python3", filepath.Join(path, "python", "server.py"))
	cmd.Env = append(os.Environ(), "DRAIN_DELAY=200ms", "DRAIN_TIMEOUT=30s")
	srv := startServed(t, cmd)

	cc, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", srv.Port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var watch healthpb.Health_WatchClient
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if watch, err = healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{Service: "example.ExampleService"}, grpc.WaitForReady(true)); err == nil {
			if st, err := watch.Recv(); err == nil && st.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never reported SERVING: %v\n%s", err, srv.Output())
		}
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", srv.MetricsPort))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz = %v, %v; want 200 (the liveness probe)", resp, err)
	}
	resp.Body.Close()

	begin := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if st, err := watch.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after SIGTERM Watch gave %v, %v; want NOT_SERVING", st, err)
	}
	if _, err := watch.Recv(); err == nil {
		t.Fatalf("the Watch stream went on after NOT_SERVING")
	}
	select {
	case <-srv.Exited():
		err := srv.Err()
		if err != nil {
			t.Errorf("server exited with %v after a normal drain\n%s", err, srv.Output())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the drain did not finish within 15s (DRAIN_TIMEOUT 30s): a Watch stream held it\n%s", srv.Output())
	}
	t.Logf("drained in %v", time.Since(begin).Round(time.Millisecond))
}
