package server

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// hardStopGrace is how long handlers get to return after the drain
// timeout cancelled their contexts, before every connection is closed.
const hardStopGrace = 300 * time.Millisecond

// leftBehindGrace is how long, after every connection is closed, the drain
// waits for handlers before it leaves behind those that ignore their
// context.
const leftBehindGrace = 200 * time.Millisecond

// Shutdown drains the server and returns when it has stopped:
//
//  1. every service reports NOT_SERVING through grpc.health.v1 and /readyz,
//     so readiness probes fail and the EndpointSlice marks the pod not
//     ready;
//  2. the server keeps serving new RPCs for Drain.PropagationDelay, while
//     that change reaches clients (ctx ends this wait early);
//  3. GracefulStop: GOAWAY on every connection, the listeners close (new
//     connections are refused), in-flight RPCs and streams run to the end;
//     long-lived streams (health Watch, ORCA reports, and those named with
//     WithLongLivedStreams) have their context cancelled at once and end
//     with UNAVAILABLE, since they would otherwise hold the drain until
//     its timeout;
//  4. if RPCs are still running after Drain.Timeout, stream contexts are
//     cancelled (a handler that returns then ends its stream with
//     UNAVAILABLE, "drain timeout ... exceeded"), and after a short grace
//     the server stops hard: every connection is closed, which cancels
//     the remaining RPCs and unblocks handlers waiting in Recv; a handler
//     that ignores its context is left behind after one more grace period
//     (logged with its method), so Shutdown returns within Drain.Timeout
//     plus 0.5s. Shutdown then returns ErrDrainTimeout.
//
// ctx cuts the drain short: once it is done the propagation delay ends,
// and the wait for in-flight RPCs does too, as at the drain timeout (step
// 4 at once: their contexts are cancelled, and the server stops hard
// within 0.5s). Shutdown then returns ErrDrainCut with ctx's cause. Run
// cuts its drain this way on a second SIGTERM or SIGINT.
//
// Shutdown is idempotent: later calls wait for the first and return its
// result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.shutdownErr = s.drain(ctx)
		s.close()
		close(s.shutdownDone)
	})
	<-s.shutdownDone
	return s.shutdownErr
}

func (s *Server) drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.health.Shutdown()
	s.log.Info("draining: health NOT_SERVING", "propagation_delay", s.cfg.Drain.PropagationDelay, "timeout", s.cfg.Drain.Timeout)

	delay := time.NewTimer(s.cfg.Drain.PropagationDelay)
	select {
	case <-delay.C:
	case <-ctx.Done():
		delay.Stop()
	}

	s.stop(drainError{"kuberpc: server draining; reconnect to another replica"})
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	deadline := time.NewTimer(s.cfg.Drain.Timeout)
	defer deadline.Stop()
	var err error
	select {
	case <-stopped:
	case <-deadline.C:
		s.log.Warn("drain timeout expired, cancelling remaining RPCs", "handlers", strings.Join(s.metrics.Running(), ", "))
		s.stopHard(stopped, fmt.Sprintf("drain timeout (DRAIN_TIMEOUT=%s) exceeded", s.cfg.Drain.Timeout))
		err = ErrDrainTimeout
	case <-ctx.Done():
		cause := context.Cause(ctx)
		s.log.Warn("drain cut short, cancelling remaining RPCs", "cause", cause.Error(), "handlers", strings.Join(s.metrics.Running(), ", "))
		s.stopHard(stopped, fmt.Sprintf("drain cut short (%v)", cause))
		err = fmt.Errorf("%w: %w", ErrDrainCut, cause)
	}

	s.mu.Lock()
	srvs := s.httpSrvs
	s.mu.Unlock()
	for _, h := range srvs {
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = h.Shutdown(hctx)
		cancel()
	}
	s.load.stop()
	s.stopJanitor()
	if s.limitGauge != nil {
		s.limitGauge.remove(s.limiter)
	}
	if s.tracer != nil {
		tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if terr := s.tracer(tctx); terr != nil {
			s.log.Warn("flush traces", "err", terr)
		}
		cancel()
	}
	s.log.Info("stopped")
	return err
}

// stopHard ends a graceful stop that is taking too long (stopped closes
// when it has ended): it cancels the contexts of the RPCs still running,
// saying why, and after hardStopGrace closes every connection, then
// stops waiting for handlers after leftBehindGrace.
func (s *Server) stopHard(stopped <-chan struct{}, why string) {
	s.hardCancel(drainError{"kuberpc: server shutting down: " + why + ", stream cancelled; retry on another replica"})
	// Handlers that honour their context return now; give their statuses a
	// moment to be written, then close every connection. grpc-go's
	// GracefulStop also waits for every handler to return; one that
	// ignores its context must not keep the process from exiting on time,
	// so after a second grace period the drain ends without it.
	select {
	case <-stopped:
	case <-time.After(hardStopGrace):
		// Stop itself can take a while closing connections; it is not
		// waited for beyond the grace either.
		go s.grpc.Stop()
		select {
		case <-stopped:
		case <-time.After(leftBehindGrace):
			s.log.Warn("drain: handlers still running after the hard stop, left behind; they ignore their context",
				"handlers", strings.Join(s.metrics.Running(), ", "))
		}
	}
}
