package nodeagent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// podInitEnv makes the test binary run pod init (Main) instead of the
// tests, for the tests that need a monitor process.
const podInitEnv = "NODEAGENT_TEST_POD_INIT"

func TestMain(m *testing.M) {
	if os.Getenv(podInitEnv) == "1" {
		os.Exit(Main(nil, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runMonitored runs argv under a monitor (pod init with a log), as the
// agent starts a container, and returns the log it wrote.
func runMonitored(t *testing.T, dir string, argv ...string) string {
	t.Helper()
	log := filepath.Join(dir, "c.log")
	os.Remove(log)
	cmd := exec.Command(os.Args[0], append([]string{podInitCommand, "--log=" + log,
		"--pid-file=" + filepath.Join(dir, "c.pid"), "--exit-file=" + filepath.Join(dir, "c.exit"), "--"}, argv...)...)
	cmd.Env = append(os.Environ(), podInitEnv+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pod init: %v: %s", err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMonitorKeepsTheOutputOfAQuickProcess: a process that prints a line
// and exits at once has its line in the log, every time. Before, the
// monitor read the process's output through exec's StdoutPipe, which
// Wait closes once the process has exited: output not yet read by then
// was lost (CI: a pod running getent, exit 0, whose kubectl logs were
// empty), here 22 of 200 runs.
func TestMonitorKeepsTheOutputOfAQuickProcess(t *testing.T) {
	dir := t.TempDir()
	lost := 0
	const runs = 100
	for i := range runs {
		want := fmt.Sprintf("line %d", i)
		out := runMonitored(t, dir, "/bin/sh", "-c", "echo '"+want+"'; echo '"+want+" on stderr' >&2")
		if !strings.Contains(out, " stdout F "+want+"\n") || !strings.Contains(out, " stderr F "+want+" on stderr\n") {
			lost++
			if lost == 1 {
				t.Logf("run %d's log: %q", i, out)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d runs of a process that prints and exits lost output from the log", lost, runs)
	}
}

// TestMonitorDoesNotWaitForADaemon: a process that leaves a child holding
// its output (sh -c 'sleep 10 & echo ...') has its monitor end 2 s after
// it, not when the child lets go of the output, with its line in the log.
func TestMonitorDoesNotWaitForADaemon(t *testing.T) {
	start := time.Now()
	out := runMonitored(t, t.TempDir(), "/bin/sh", "-c", "sleep 10 & echo started")
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("the monitor ended %v after a process that left a child; want about 2 s", took)
	}
	if !strings.Contains(out, " stdout F started\n") {
		t.Errorf("log %q; want the line the process printed", out)
	}
}
