package server

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// MemoryLimitShare is the share of Config.MemoryLimit that New gives the
// Go runtime as its soft memory limit (GOMEMLIMIT). The runtime counts
// its heap, stacks and own metadata; the tenth left over is for what it
// does not count (the binary, memory outside Go, pages the kernel has
// not taken back yet), as automemlimit and most Go-on-Kubernetes advice
// do. A program that needs another share sets GOMEMLIMIT itself.
const MemoryLimitShare = 0.9

// applyMemoryLimit sets the Go runtime's soft memory limit from the
// container's limit, unless the environment has GOMEMLIMIT, and logs
// what it did.
func applyMemoryLimit(limit int64, log *slog.Logger) {
	if limit <= 0 {
		return
	}
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok && v != "" {
		log.Info("GOMEMLIMIT is set, so MEMORY_LIMIT does not change the Go runtime's memory limit",
			slog.String("gomemlimit", v), slog.Int64("memory_limit_bytes", limit))
		return
	}
	soft := int64(float64(limit) * MemoryLimitShare)
	debug.SetMemoryLimit(soft)
	log.Info("Go runtime memory limit set from the container's",
		slog.Int64("gomemlimit_bytes", soft), slog.Int64("memory_limit_bytes", limit))
}
