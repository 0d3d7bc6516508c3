package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kuberpc/kuberpc/server"
)

// newWithMemoryLimit builds a server with MemoryLimit limit and returns
// the Go runtime's memory limit after New, and what New logged. The
// runtime's limit is restored when the test ends.
func newWithMemoryLimit(t *testing.T, limit int64) (int64, string) {
	t.Helper()
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	cfg := server.DefaultConfig()
	cfg.MemoryLimit = limit
	cfg.Drain.PropagationDelay = 0
	var log bytes.Buffer
	s, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return debug.SetMemoryLimit(-1), log.String()
}

// TestMemoryLimitSetsTheRuntimes: a known container limit becomes the Go
// runtime's soft limit, at MemoryLimitShare of it. (Not parallel: the
// runtime's limit is the process's. The limit is large enough not to
// change how the other tests' garbage is collected.)
func TestMemoryLimitSetsTheRuntimes(t *testing.T) {
	var limit int64 = 64 << 30
	got, log := newWithMemoryLimit(t, limit)
	if want := int64(float64(limit) * server.MemoryLimitShare); got != want {
		t.Errorf("runtime memory limit %d, want %d (%.0f%% of %d)", got, want, server.MemoryLimitShare*100, limit)
	}
	if !strings.Contains(log, "gomemlimit_bytes=61847529062") {
		t.Errorf("log does not say the limit it set:\n%s", log)
	}
}

// TestGOMEMLIMITWinsOverMemoryLimit: a GOMEMLIMIT the program was started
// with is the operator's choice; MEMORY_LIMIT does not replace it.
func TestGOMEMLIMITWinsOverMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "100GiB")
	before := debug.SetMemoryLimit(-1)
	got, log := newWithMemoryLimit(t, 64<<30)
	if got != before {
		t.Errorf("runtime memory limit %d after New, want it left at %d", got, before)
	}
	if !strings.Contains(log, "GOMEMLIMIT is set") {
		t.Errorf("log does not say why MEMORY_LIMIT was not applied:\n%s", log)
	}
}

// TestNoMemoryLimitLeavesTheRuntimes: zero means no limit is known.
func TestNoMemoryLimitLeavesTheRuntimes(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	if got, _ := newWithMemoryLimit(t, 0); got != before {
		t.Errorf("runtime memory limit %d after New with MemoryLimit 0, want it left at %d", got, before)
	}
}
