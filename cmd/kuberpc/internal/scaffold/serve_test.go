package scaffold_test

import (
	"os/exec"
	"testing"
	"time"

	"github.com/kuberpc/kuberpc/examples/example/exampletest"
)

// startServed starts cmd with PORT=0 and METRICS_PORT=0 added to its
// environment, so that the server picks free ports and prints them, and
// waits until it listens. A port the test picked and freed could be taken
// before the server binds it. The process is killed at cleanup.
func startServed(t *testing.T, cmd *exec.Cmd) *exampletest.Server {
	t.Helper()
	cmd.Env = append(cmd.Env, "PORT=0", "METRICS_PORT=0")
	srv, err := exampletest.StartServer(cmd, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(0) })
	return srv
}
