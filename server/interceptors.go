package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/internal/rpcmetrics"
)

// unaryInterceptor records metrics, sheds load, applies the default
// deadline, recovers panics and logs the RPC, in one interceptor so that the
// default path costs one closure call.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	mm := s.metrics.Method(info.FullMethod, rpcmetrics.Unary)
	start := time.Now()
	n := mm.Start()
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(ctx, info.FullMethod, r)
		}
		code := status.Code(err)
		elapsed := time.Since(start)
		mm.Done(code, elapsed)
		s.logRPC(ctx, info.FullMethod, code, elapsed, err)
	}()
	if limit := s.cfg.Limits.MaxInFlight; limit > 0 && n > int64(limit) {
		return nil, status.Errorf(codes.Unavailable, "kuberpc: server overloaded: %d RPCs in flight, limit MAX_IN_FLIGHT=%d", n-1, limit)
	}
	if d := s.cfg.Limits.DefaultDeadline; d > 0 {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
	}
	return handler(ctx, req)
}

// streamInterceptor records metrics, sheds load, recovers panics, logs the
// RPC, and ends the stream with UNAVAILABLE when the drain timeout expires.
// The handler runs on its own goroutine so that a handler blocked in
// RecvMsg, or ignoring its context, cannot hold the stream past the drain
// timeout.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	mm := s.metrics.Method(info.FullMethod, rpcmetrics.StreamType(info.IsClientStream, info.IsServerStream))
	start := time.Now()
	n := mm.Start()
	ctx := ss.Context()
	defer func() {
		code := status.Code(err)
		elapsed := time.Since(start)
		mm.Done(code, elapsed)
		s.logRPC(ctx, info.FullMethod, code, elapsed, err)
	}()
	if limit := s.cfg.Limits.MaxInFlight; limit > 0 && n > int64(limit) {
		return status.Errorf(codes.Unavailable, "kuberpc: server overloaded: %d RPCs in flight, limit MAX_IN_FLIGHT=%d", n-1, limit)
	}
	gs := &guardedStream{ServerStream: ss}
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- s.recovered(ctx, info.FullMethod, r)
			}
		}()
		done <- handler(srv, gs)
	}()
	// Monitoring streams (health Watch, ORCA reports) would hold a graceful
	// stop until the drain timeout; they end when it begins.
	var stopping <-chan struct{}
	if monitoringStreams[info.FullMethod] {
		stopping = s.stopping
	}
	select {
	case err = <-done:
		return err
	case <-stopping:
		gs.close()
		return status.Error(codes.Unavailable, "kuberpc: server draining; reconnect to another replica")
	case <-s.hardStop:
		gs.close()
		return status.Errorf(codes.Unavailable, "kuberpc: server shutting down: drain timeout (DRAIN_TIMEOUT=%s) exceeded, stream cancelled; retry on another replica", s.cfg.Drain.Timeout)
	}
}

// monitoringStreams are the long-lived streams that watch the server rather
// than do work for the client.
var monitoringStreams = map[string]bool{
	"/grpc.health.v1.Health/Watch":                          true,
	"/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics": true,
}

// guardedStream stops a handler abandoned at the drain timeout from
// sending on a stream that grpc has already finished.
type guardedStream struct {
	grpc.ServerStream
	mu     sync.Mutex
	closed bool
}

func (g *guardedStream) SendMsg(m any) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return status.Error(codes.Unavailable, "kuberpc: stream cancelled by drain timeout")
	}
	return g.ServerStream.SendMsg(m)
}

func (g *guardedStream) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// recovered logs a handler panic with its stack and returns the INTERNAL
// status the client sees; the panic value is not sent to the client.
func (s *Server) recovered(ctx context.Context, method string, r any) error {
	s.log.LogAttrs(ctx, slog.LevelError, "handler panicked",
		slog.String("method", method),
		slog.String("panic", fmt.Sprint(r)),
		slog.String("stack", string(debug.Stack())))
	return status.Errorf(codes.Internal, "kuberpc: internal error in %s (handler panicked; see server logs)", method)
}

// logRPC writes the one line per RPC, at the configured level or at warn
// for codes that mean a server-side fault.
func (s *Server) logRPC(ctx context.Context, method string, code codes.Code, elapsed time.Duration, err error) {
	level := s.rpcLevel
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelWarn
	}
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Duration("duration", elapsed),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", status.Convert(err).Message()))
	}
	s.log.LogAttrs(ctx, level, "rpc", attrs...)
}
