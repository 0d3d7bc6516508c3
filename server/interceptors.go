package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/kuberpc/kuberpc/internal/limiter"
	"github.com/kuberpc/kuberpc/internal/refusal"
	"github.com/kuberpc/kuberpc/internal/rpcmetrics"
	"github.com/kuberpc/kuberpc/internal/tracecontext"
)

// unaryInterceptor records metrics, sheds load, applies the default
// deadline, recovers panics and logs the RPC, in one interceptor so that the
// default path costs one closure call.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	a := admissionOf(ctx)
	if s.propagate && (a == nil || a.traced) {
		ctx = tracecontext.Extract(ctx)
	}
	mm := s.methodMetrics(info.FullMethod, rpcmetrics.Unary)
	start := time.Now()
	mm.Start()
	begun := false
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(ctx, info.FullMethod, r)
		}
		err = truncateStatus(err)
		code := status.Code(err)
		elapsed := time.Since(start)
		mm.Done(code, elapsed)
		if begun {
			// The limiter learns the latency of calls that succeeded,
			// and of those whose caller gave up waiting (see
			// limiter.Outcome): the outcome is known before the
			// admission ends.
			if a != nil {
				a.outcome.Store(int32(unaryOutcome(a.Context, code)))
			}
			s.end(a)
		}
		s.logRPC(ctx, info.FullMethod, code, elapsed, err)
	}()
	if ctx, err = s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	if !s.exempt[info.FullMethod] {
		var n int64
		n = s.begin(a)
		begun = true
		if aerr := s.admitHandler(n); aerr != nil {
			return nil, aerr
		}
	}
	if d := s.cfg.Limits.DefaultDeadline; d > 0 {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
	}
	resp, err = handler(ctx, req)
	if err == nil && a != nil && s.cfg.Limits.StalledWriteTimeout != Forever {
		s.replyQueued(ctx, a, resp)
	}
	return resp, err
}

// streamInterceptor records metrics, sheds load, recovers panics and logs
// the RPC. The handler runs on grpc-go's goroutine, with a context that
// also ends when the drain timeout expires, and, for long-lived streams
// (see WithLongLivedStreams), when the graceful stop begins; a handler
// that returns because of it ends the stream with UNAVAILABLE and a
// message saying why, so the client re-opens it on another replica.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	mm := s.methodMetrics(info.FullMethod, rpcmetrics.StreamType(info.IsClientStream, info.IsServerStream))
	start := time.Now()
	mm.Start()
	ctx := ss.Context()
	a := admissionOf(ctx)
	if s.propagate && (a == nil || a.traced) {
		ctx = tracecontext.Extract(ctx)
	}
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(ctx, info.FullMethod, r)
		}
		err = truncateStatus(err)
		code := status.Code(err)
		elapsed := time.Since(start)
		mm.Done(code, elapsed)
		s.logRPC(ctx, info.FullMethod, code, elapsed, err)
	}()
	if ctx, err = s.authorize(ctx, info.FullMethod); err != nil {
		return err
	}
	if !s.exempt[info.FullMethod] {
		// A stream's length says nothing of the server's load: only its
		// admission counts, not its latency (its outcome stays Failed).
		n := s.begin(a)
		defer s.end(a)
		if aerr := s.admitHandler(n); aerr != nil {
			return aerr
		}
	}
	end := s.hardStop
	if s.longLived[info.FullMethod] {
		end = s.stopping
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(end, func() { cancel(context.Cause(end)) })
	defer stop()
	ds := &drainStream{ServerStream: ss, ctx: sctx, s: s, method: info.FullMethod}
	err = handler(srv, ds)
	ds.stopWatch()
	if ctx.Err() == nil && sctx.Err() != nil {
		var de drainError
		if errors.As(context.Cause(sctx), &de) {
			return status.Error(codes.Unavailable, de.msg)
		}
	}
	return err
}

// exemptMethods are monitoring calls: never counted as load, never shed
// or refused, so that a loaded server still answers its probes and load
// reports (readiness would otherwise pull every replica out at once).
var exemptMethods = []string{
	"/grpc.health.v1.Health/Check",
	"/grpc.health.v1.Health/Watch",
	"/grpc.health.v1.Health/List",
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
	"/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics",
}

// admission is a stream admitted by tapHandle, carried in its context
// to the interceptor. It holds a place under the limits from admission
// until its handler has returned, or, if none started, its stream has
// ended: queued for a CPU (grpc-go starts each stream's goroutine at
// once; on a busy server they wait in the scheduler), waiting for its
// request, running, or running on after a reset, so each of those is
// seen where it forms.
type admission struct {
	context.Context // the stream's, as tapHandle got it
	start           time.Time
	shard           uint8        // of Server.pending
	method          *methodLimit // its method's cap, if it has one
	peak            int          // from the adaptive limiter; 0 when there is none
	state           atomic.Int32 // admStarted | admEnded | admStreamDone
	outcome         atomic.Int32 // a limiter.Outcome, set for unary calls: Failed (not learned) otherwise
	traced          bool         // its request carries a W3C traceparent
	// prev and next link it into its shard of Server.pending while its
	// handler has not started; guarded by that shard's lock.
	prev, next *admission
}

// Value carries the admission to the interceptor; the admission is the
// stream's context, so admitting costs no context of its own.
func (a *admission) Value(key any) any {
	if key == (admissionKey{}) {
		return a
	}
	return a.Context.Value(key)
}

const (
	admStarted    = 1 << iota // its handler started
	admEnded                  // its handler returned
	admStreamDone             // its stream ended: its handler returned, or grpc-go cancelled its context before one ran
)

// holds reports whether an admission in state st holds its place: its
// stream is open, or its handler is running.
func holds(st int32) bool {
	return st&admStreamDone == 0 || (st&admStarted != 0 && st&admEnded == 0)
}

type admissionKey struct{}

// mark adds bit to a's state and moves s.held when a takes or gives up
// its place (a handler can start after its stream was reset). The first
// admStreamDone releases a's place under the adaptive limit.
func (s *Server) mark(a *admission, bit int32) {
	for {
		old := a.state.Load()
		st := old | bit
		if a.state.CompareAndSwap(old, st) {
			switch was, now := holds(old), holds(st); {
			case was && !now:
				s.held.Add(-1)
				if a.method != nil {
					a.method.held.Add(-1)
				}
			case !was && now:
				s.held.Add(1)
				if a.method != nil {
					a.method.held.Add(1)
				}
			}
			if a.peak > 0 && st&admStreamDone != 0 && old&admStreamDone == 0 {
				outcome := limiter.Outcome(a.outcome.Load())
				latency := time.Since(a.start)
				if outcome == limiter.Dropped {
					// Only a drop's deadline matters: looking it up walks
					// the stream's context, on every call's path.
					if dl, ok := a.Context.Deadline(); ok {
						latency = min(latency, dl.Sub(a.start)) // when its caller gave up
					}
				}
				s.limiter.Release(a.peak, latency, outcome)
			}
			return
		}
	}
}

// unaryOutcome is how the limiter learns a unary call that ended with
// code, ctx being its stream's (not the handler's, which a default
// deadline may have cancelled): a call whose caller gave up before its
// handler returned (its deadline passed, or it cancelled), whatever the
// handler answered, is a drop. A stream that ended before its handler
// ran is not: a client can open streams and never send their request,
// and their waits would say nothing about the server's queue.
func unaryOutcome(ctx context.Context, code codes.Code) limiter.Outcome {
	switch {
	case ctx.Err() != nil:
		return limiter.Dropped
	case code == codes.OK:
		return limiter.Succeeded
	}
	return limiter.Failed
}

// admissionOf returns the admission tapHandle gave the call's stream, or
// nil when it gave none (an exempt method, or a stream it did not see).
func admissionOf(ctx context.Context) *admission {
	a, _ := ctx.Value(admissionKey{}).(*admission)
	return a
}

// begin marks the handler of the call admitted as a (nil for one
// tapHandle did not admit) started and returns the count of running
// handlers. From here the interceptor, not the janitor, ends the
// admission.
func (s *Server) begin(a *admission) int64 {
	if a != nil {
		s.mark(a, admStarted)
		s.pending.remove(a)
	}
	return s.work.Add(1)
}

// end marks the call's handler returned, which ends its stream.
func (s *Server) end(a *admission) {
	s.work.Add(-1)
	if a != nil {
		s.mark(a, admEnded|admStreamDone)
	}
}

// pendingShards spreads admissions waiting for their handler over locks.
const pendingShards = 16

// janitorInterval is how often streams that ended before their handler
// ran (reset, or never sent their request) are looked for.
const janitorInterval = 100 * time.Millisecond

// pendingAdmissions holds the admissions whose handler has not started:
// the streams that can end without the interceptor seeing it. Tracking
// them in a set, swept by a janitor, instead of a context.AfterFunc per
// stream saves five allocations and a lock on the stream's context per
// call; such a stream keeps its place up to janitorInterval after it
// ends. Each shard is a list linked through the admissions themselves,
// so joining and leaving it cost a lock and no allocation or hashing.
type pendingAdmissions struct {
	shards [pendingShards]struct {
		mu   sync.Mutex
		head *admission
	}
}

func (p *pendingAdmissions) add(a *admission) {
	a.shard = uint8(rand.Uint32() % pendingShards)
	sh := &p.shards[a.shard]
	sh.mu.Lock()
	a.next = sh.head
	if sh.head != nil {
		sh.head.prev = a
	}
	sh.head = a
	sh.mu.Unlock()
}

func (p *pendingAdmissions) remove(a *admission) {
	sh := &p.shards[a.shard]
	sh.mu.Lock()
	p.unlinkLocked(a)
	sh.mu.Unlock()
}

// unlinkLocked takes a out of its shard's list, if it is still there;
// the shard's lock is held.
func (p *pendingAdmissions) unlinkLocked(a *admission) {
	sh := &p.shards[a.shard]
	switch {
	case a.prev != nil:
		a.prev.next = a.next
	case sh.head == a:
		sh.head = a.next
	default:
		return // not in the list: the janitor took it out
	}
	if a.next != nil {
		a.next.prev = a.prev
	}
	a.prev, a.next = nil, nil
}

// sweep ends the admissions whose stream is over and whose handler never
// started.
func (s *Server) sweep() {
	var done []*admission
	for i := range s.pending.shards {
		sh := &s.pending.shards[i]
		sh.mu.Lock()
		for a := sh.head; a != nil; {
			next := a.next
			if a.Context.Err() != nil {
				s.pending.unlinkLocked(a)
				done = append(done, a)
			}
			a = next
		}
		sh.mu.Unlock()
	}
	for _, a := range done {
		s.mark(a, admStreamDone)
	}
}

// stopJanitor ends the janitor, once.
func (s *Server) stopJanitor() {
	s.janitorStopOnce.Do(func() { close(s.janitorStop) })
}

// janitor sweeps every janitorInterval until stop is closed.
func (s *Server) janitor(stop <-chan struct{}) {
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// admitHandler decides whether the n-th running handler may run: the
// server-wide handler cap, exact here also for streams tapHandle did not
// see.
func (s *Server) admitHandler(n int64) error {
	if n > int64(s.cfg.Limits.MaxHandlers) {
		return s.refusals.handlerLimit
	}
	return nil
}

// refusals are the errors with which a Server refuses calls, built once:
// under overload most calls are refused, and building a status with its
// details costs a share of the core the accepted calls need.
type refusals struct {
	handlerLimit error // MaxHandlers
	inFlight     error // MaxInFlight
	adaptive     atomic.Pointer[adaptiveRefusal]
}

// adaptiveRefusal is the refusal at one value of the adaptive limit.
type adaptiveRefusal struct {
	limit int
	err   error
}

func newRefusals(l Limits) *refusals {
	return &refusals{
		handlerLimit: refusal.New(codes.ResourceExhausted, fmt.Sprintf("kuberpc: server at its handler limit (MAX_HANDLERS=%d); retry later or on another replica", l.MaxHandlers)),
		inFlight:     refusal.New(codes.Unavailable, fmt.Sprintf("kuberpc: server overloaded: MAX_IN_FLIGHT=%d RPCs in flight; retry on another replica", l.MaxInFlight)),
	}
}

// errAdaptiveLimit is the refusal of a call beyond the adaptive limit,
// rebuilt only when the limit has moved since the last one.
func (s *Server) errAdaptiveLimit() error {
	limit := s.limiter.Limit()
	if r := s.refusals.adaptive.Load(); r != nil && r.limit == limit {
		return r.err
	}
	r := &adaptiveRefusal{limit: limit, err: refusal.New(codes.Unavailable, fmt.Sprintf("kuberpc: server overloaded: adaptive concurrency limit %d reached; retry on another replica", limit))}
	s.refusals.adaptive.Store(r)
	return r.err
}

// methodLimit is one method's cap (Limits.MethodLimits) and the count of
// its admissions holding their place.
type methodLimit struct {
	limit  int64
	held   atomic.Int64
	refuse error
}

func newMethodLimits(limits map[string]int) map[string]*methodLimit {
	out := make(map[string]*methodLimit, len(limits))
	for m, n := range limits {
		out[m] = &methodLimit{limit: int64(n), refuse: refusal.New(codes.ResourceExhausted,
			fmt.Sprintf("kuberpc: %s at its limit of %d calls at once (METHOD_LIMITS); retry later or on another replica", m, n))}
	}
	return out
}

// tapHandle admits or refuses a stream before grpc-go creates it: the
// server-wide handler cap (a burst of streams over many connections, a
// rapid-reset attack, or streams that never send their request cannot
// hold more than MaxHandlers), the method's own cap, the static
// MaxInFlight and the adaptive limit, each counting the admissions that
// hold their place (see admission; under the adaptive limit, only unary
// calls hold one). Refusing here costs no goroutine and
// no decoding: under CPU-bound overload that is what frees the cores.
// An admission's stream is done when its handler returns, or, for a
// stream that ends before a handler ran (grpc-go cancels its context on
// every way a stream ends), when the janitor next sweeps.
func (s *Server) tapHandle(ctx context.Context, info *tap.Info) (context.Context, error) {
	if s.exempt[info.FullMethodName] {
		return ctx, nil
	}
	ml := s.methodLimits[info.FullMethodName]
	n := s.held.Add(1)
	var refuse error
	switch {
	case n > int64(s.cfg.Limits.MaxHandlers):
		refuse = s.refusals.handlerLimit
	case ml != nil && ml.held.Add(1) > ml.limit:
		ml.held.Add(-1)
		ml, refuse = nil, ml.refuse
	case s.cfg.Limits.MaxInFlight > 0 && n > int64(s.cfg.Limits.MaxInFlight):
		refuse = s.refusals.inFlight
	}
	peak := 0
	if refuse == nil && s.limiter != nil {
		if _, streaming := s.registered(info.FullMethodName); streaming {
			// A stream holds no place under the adaptive limit, which
			// learns from unary calls and bounds them: a stream may
			// stay open for hours (a watch), and held streams would
			// take the places of the calls the limit is for, and keep
			// them once a cut brought it below their number. A new
			// stream is refused while the calls are at the limit.
			if s.limiter.Full() {
				refuse = s.errAdaptiveLimit()
			}
		} else {
			var ok bool
			if peak, ok = s.limiter.Acquire(); !ok {
				refuse = s.errAdaptiveLimit()
			}
		}
	}
	if refuse != nil {
		s.held.Add(-1)
		if ml != nil {
			ml.held.Add(-1)
		}
		return ctx, refuse
	}
	a := &admission{Context: ctx, start: time.Now(), method: ml, peak: peak, traced: len(info.Header["traceparent"]) > 0}
	s.pending.add(a)
	return a, nil
}

// unknownMethodName is the metric label of calls to methods no service
// has: clients choose those names, so each must not get series of its own.
const unknownMethodName = "/unknown/unknown"

// methodMetrics returns the metrics of calls to method, whose type is
// typ; calls to methods no registered service has share the metrics of
// unknownMethodName. One lookup per call: the methods' metrics are kept
// by name once first used.
func (s *Server) methodMetrics(method string, typ rpcmetrics.Type) *rpcmetrics.Method {
	if mm, ok := s.methodsSeen.Load(method); ok {
		return mm.(*rpcmetrics.Method)
	}
	name := s.metricName(method)
	mm := s.metrics.Method(name, typ)
	if name == method {
		// Unknown names are not kept: a client chooses them.
		s.methodsSeen.Store(method, mm)
	}
	return mm
}

// metricName is method, or unknownMethodName when no registered service
// has it.
func (s *Server) metricName(method string) string {
	if ok, _ := s.registered(method); ok {
		return method
	}
	return unknownMethodName
}

// registered reports whether a registered service has method, and
// whether the method streams (client, server or both ways).
func (s *Server) registered(method string) (ok, streaming bool) {
	s.knownOnce.Do(func() {
		// Services are registered before the server serves (grpc-go
		// requires it), so the first RPC sees them all.
		s.known = map[string]bool{}
		for svc, info := range s.grpc.GetServiceInfo() {
			for _, m := range info.Methods {
				s.known["/"+svc+"/"+m.Name] = m.IsClientStream || m.IsServerStream
			}
		}
	})
	streaming, ok = s.known[method]
	return ok, streaming
}

// maxStatusMessage bounds the status message sent to clients.
const maxStatusMessage = 1024

// truncateStatus shortens a status message that would otherwise be sent
// whole in grpc-message (a handler echoing its input, an error wrapping
// a large value).
func truncateStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || len(st.Message()) <= maxStatusMessage {
		return err
	}
	msg := st.Message()[:maxStatusMessage]
	for len(msg) > 0 && !utf8.ValidString(msg) {
		msg = msg[:len(msg)-1]
	}
	p := st.Proto()
	p.Message = msg + fmt.Sprintf("… (%d bytes cut)", len(st.Message())-len(msg))
	return status.FromProto(p).Err()
}

// unknownMethod answers calls to methods no service has, with the method
// name shortened (grpc-go's own answer quotes all of it).
func unknownMethod(_ any, stream grpc.ServerStream) error {
	m, _ := grpc.Method(stream.Context())
	return status.Errorf(codes.Unimplemented, "unknown method %q", shortMethod(m))
}

// shortMethod cuts a method name, which a client chooses, for messages
// and logs.
func shortMethod(m string) string {
	if len(m) > 256 {
		return m[:256] + "…"
	}
	return m
}

// drainError is the cause with which a drain ends stream contexts.
type drainError struct{ msg string }

func (e drainError) Error() string { return e.msg }

// defaultLongLived are the long-lived streams every Server has: they watch
// the server rather than do work for the client.
var defaultLongLived = []string{
	"/grpc.health.v1.Health/Watch",
	"/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics",
}

// drainStream gives the handler a context that the drain can end, and
// closes the client's connection when a SendMsg stays blocked for
// StalledWriteTimeout: the client has stopped reading (grpc-go blocks
// SendMsg once a stream's write quota is used up).
//
// A SendMsg costs the watch two atomic additions, not a timer: a timer
// armed and stopped around every message cost a bidi stream of small
// messages 4 % of its rate (bench probe, 10 rounds: 0.957 of raw
// grpc-go's messages per second with it, 0.996 without). Instead a
// timer per stream, started by its first SendMsg, looks every quarter
// of the timeout; a call seen blocked at five looks in a row has been
// blocked for at least the timeout, and at most a quarter more.
type drainStream struct {
	grpc.ServerStream
	ctx    context.Context
	s      *Server
	method string
	// sends counts SendMsg's entries and exits: odd while one is in
	// progress, the same odd value while that one is blocked.
	sends atomic.Uint64
	watch *time.Timer // created by the first SendMsg
	// Of the watch's own goroutine (its looks never overlap): the value
	// of sends at the last look and how many looks in a row saw it.
	seen  uint64
	looks int
}

// stallLooks is how many times per StalledWriteTimeout the watch looks
// at a stream's sends.
const stallLooks = 4

func (d *drainStream) Context() context.Context { return d.ctx }

func (d *drainStream) SendMsg(m any) error {
	if d.watch == nil {
		timeout := d.s.cfg.Limits.StalledWriteTimeout
		if timeout == Forever {
			return d.ServerStream.SendMsg(m)
		}
		// Armed only once the field is set, which look reads.
		d.watch = time.AfterFunc(math.MaxInt64, d.look)
		d.watch.Reset(timeout / stallLooks)
	}
	d.sends.Add(1)
	err := d.ServerStream.SendMsg(m)
	d.sends.Add(1)
	return err
}

// look is the watch: it closes the connection once one SendMsg has been
// seen blocked at stallLooks+1 looks in a row, each StalledWriteTimeout
// ÷ stallLooks apart, and looks again until the stream has ended (grpc-go
// cancels the stream's context then; after its handler has returned,
// before that, no SendMsg is in progress, so no look can close).
func (d *drainStream) look() {
	ctx := d.ServerStream.Context()
	if ctx.Err() != nil {
		return
	}
	n := d.sends.Load()
	switch {
	case n%2 == 0 || n != d.seen:
		d.seen, d.looks = n, 0
	default:
		d.looks++
	}
	timeout := d.s.cfg.Limits.StalledWriteTimeout
	if d.looks >= stallLooks {
		d.s.closeStalled(ctx, d.method, timeout)
		return
	}
	d.watch.Reset(timeout / stallLooks)
}

// stopWatch stops the watch once the handler has returned; a look that
// re-arms it meanwhile is the last, as the stream ends.
func (d *drainStream) stopWatch() {
	if d.watch != nil {
		d.watch.Stop()
	}
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
		slog.String("method", shortMethod(method)),
		slog.String("code", code.String()),
		slog.Duration("duration", elapsed),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", status.Convert(err).Message()))
	}
	s.log.LogAttrs(ctx, level, "rpc", attrs...)
}
