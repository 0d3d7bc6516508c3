package scaffold_test

import (
	"bufio"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kuberpc/kuberpc/examples/example/exampletest"
)

// served is a scaffolded server started by startServed.
type served struct {
	port, metricsPort int
	// exited receives the process's Wait error.
	exited chan error

	mu  sync.Mutex
	out strings.Builder
}

// output is what the server has printed so far, stdout and stderr.
func (s *served) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// startServed starts cmd with PORT=0 and METRICS_PORT=0 added to its
// environment, so that the server picks free ports and prints them, and
// waits until it listens. A port the test picked and freed could be taken
// before the server binds it. The process is killed at cleanup.
func startServed(t *testing.T, cmd *exec.Cmd) *served {
	t.Helper()
	cmd.Env = append(cmd.Env, "PORT=0", "METRICS_PORT=0")
	s := &served{exited: make(chan error, 1)}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.out.Write(p)
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.mu.Lock()
			s.out.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if port, mport, ok := exampletest.Listening(sc.Text()); ok && s.port == 0 {
				s.port, s.metricsPort = port, mport
				close(listening)
			}
		}
		s.exited <- cmd.Wait()
	}()
	select {
	case <-listening:
	case err := <-s.exited:
		t.Fatalf("server exited before listening: %v\n%s", err, s.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not listen in 30s\n%s", s.output())
	}
	return s
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
