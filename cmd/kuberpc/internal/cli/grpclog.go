package cli

import (
	"io"
	"os"
	"strconv"

	"google.golang.org/grpc/grpclog"
)

// init gives the CLI grpc-go's own logging back: errors only, or what
// GRPC_GO_LOG_SEVERITY_LEVEL and GRPC_GO_LOG_VERBOSITY_LEVEL ask, as in
// any grpc-go program. The API server's storage package, which the
// metrics-adapter command links, sends grpc-go's warnings to klog from
// its own init, so without this a user calling a service read a warning
// for each connection that failed or that a call closed.
func init() { grpclog.SetLoggerV2(grpcLogger(os.Getenv, os.Stderr)) }

// grpcLogger is grpc-go's default logger, writing to w, as getenv's
// GRPC_GO_LOG_* variables configure it.
func grpcLogger(getenv func(string) string, w io.Writer) grpclog.LoggerV2 {
	info, warning, errs := io.Discard, io.Discard, io.Discard
	switch getenv("GRPC_GO_LOG_SEVERITY_LEVEL") {
	case "", "ERROR", "error":
		errs = w
	case "WARNING", "warning":
		warning = w
	case "INFO", "info":
		info = w
	}
	v, _ := strconv.Atoi(getenv("GRPC_GO_LOG_VERBOSITY_LEVEL"))
	return grpclog.NewLoggerV2WithVerbosity(info, warning, errs, v)
}
