package server

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
)

// connID is how a stream's connection is found from the peer grpc-go
// gives its handler: the remote address the connection returned, which
// grpc-go hands on as it is. For TCP and Unix-domain connections that is
// a pointer of the connection's own, so two connections never share an
// ID (two Unix-domain peers' addresses can print alike) and finding one
// formats nothing. Other kinds of connection are not tracked (nil).
func connID(remote net.Addr) any {
	switch a := remote.(type) {
	case *net.TCPAddr:
		if a != nil {
			return a
		}
	case *net.UnixAddr:
		if a != nil {
			return a
		}
	}
	return nil
}

// trackingListener records the connections Serve accepts, so that one can
// be closed when its client stops reading its replies (see closeStalled
// and trackedConn.queued): grpc-go gives no handle on a stream's
// transport, and a stream whose client grants no flow-control window
// keeps its replies in memory for as long as the connection lives.
type trackingListener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection within Limits.MaxConnections,
// closing those beyond it as they come.
func (l trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.openConns.Add(1) > int64(l.s.cfg.Limits.MaxConnections) {
			l.s.openConns.Add(-1)
			l.s.refuseConn(c)
			continue
		}
		tc := &trackedConn{Conn: c, s: l.s, id: connID(c.RemoteAddr())}
		if tc.id != nil {
			l.s.conns.Store(tc.id, tc)
		}
		return tc, nil
	}
}

// refuseConn closes c, accepted beyond Limits.MaxConnections, counts it
// and logs it, at most once every connRefusalLogEvery with the number
// since the last line.
func (s *Server) refuseConn(c net.Conn) {
	c.Close()
	s.connsRefused.Inc()
	n := s.connRefusals.Add(1)
	now := time.Now().UnixNano()
	if last := s.connRefusalLogged.Load(); now-last >= int64(connRefusalLogEvery) && s.connRefusalLogged.CompareAndSwap(last, now) {
		s.connRefusals.Add(-n)
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "closing new connections: the server holds MAX_CONNECTIONS",
			slog.Int("max_connections", s.cfg.Limits.MaxConnections), slog.Int64("closed", n), slog.String("last_peer", c.RemoteAddr().String()))
	}
}

// connRefusalLogEvery is how often refused connections are logged.
const connRefusalLogEvery = 10 * time.Second

// unreadBacklog is how many bytes of unary replies a connection may have
// queued and not yet written before the server watches whether its client
// still reads (see trackedConn.queued).
const unreadBacklog = 256 << 10

// trackedConn is an accepted connection: it removes itself from the
// server's connections when closed, and counts what it writes against
// the unary replies queued for it.
type trackedConn struct {
	net.Conn
	s    *Server
	id   any
	once sync.Once

	closed  atomic.Bool
	written atomic.Int64 // bytes written
	backlog atomic.Int64 // bytes of unary replies queued and not yet matched by bytes written
	watched atomic.Bool  // a stall check is armed
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.closed.Store(true)
		c.s.openConns.Add(-1)
		if c.id != nil {
			c.s.conns.Delete(c.id)
		}
	})
	return c.Conn.Close()
}

// Write counts the bytes written, which pay off the backlog of queued
// replies (every byte counts, frames and other streams' too, so the
// backlog can only be underestimated; it never goes below zero, so a
// busy past earns no credit against a stall to come).
func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.written.Add(int64(n))
		for b := c.backlog.Load(); b > 0 && !c.backlog.CompareAndSwap(b, max(0, b-int64(n))); b = c.backlog.Load() {
		}
	}
	return n, err
}

// SyscallConn passes the underlying connection's through, for grpc-go's
// socket options and channelz.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

// queued adds a unary reply of n bytes, about to be queued by grpc-go,
// to the connection's backlog. grpc-go sends a unary reply after its
// handler has returned and says nothing when it has been written, so a
// client that grants no flow-control window could keep any number of
// them in the server's memory, out of the handlers' count. Once the
// backlog passes unreadBacklog the connection is watched: if in the
// next StalledWriteTimeout it writes fewer bytes than the backlog was,
// its client has stopped reading and the connection is closed, as a
// stalled stream's is; otherwise, while the backlog stays over
// unreadBacklog, it is watched again.
func (c *trackedConn) queued(n int64) {
	if c.backlog.Add(n) >= unreadBacklog && c.watched.CompareAndSwap(false, true) {
		c.watch()
	}
}

func (c *trackedConn) watch() {
	timeout := c.s.cfg.Limits.StalledWriteTimeout
	w0, b0 := c.written.Load(), c.backlog.Load()
	time.AfterFunc(timeout, func() {
		if c.closed.Load() {
			return
		}
		if c.written.Load()-w0 < b0 {
			c.s.log.LogAttrs(context.Background(), slog.LevelWarn, "closing a connection whose client stopped reading",
				slog.String("peer", c.RemoteAddr().String()),
				slog.String("replies", "unary"),
				slog.Int64("unread_bytes", c.backlog.Load()),
				slog.Duration("unread_for", timeout))
			c.Close()
			return
		}
		c.watched.Store(false)
		// A reply queued since the check above found the watch armed
		// and left it to this one.
		if c.backlog.Load() >= unreadBacklog && c.watched.CompareAndSwap(false, true) {
			c.watch()
		}
	})
}

// replyQueued counts the reply resp that a unary handler returned without
// error, on the stream of admission a (ctx the handler's), against its
// connection's backlog (see trackedConn.queued). Only replies grpc-go
// will send as they are sized count: none when the caller has gone (its
// stream's context ended), none over MaxSendMsgSize (grpc-go refuses to
// send them).
//
// A reply grpc-go would compress (it answers a compressed request in
// the request's encoding) is sent uncompressed instead: its compressed
// size is not known until grpc-go has queued it, and uncounted replies
// let a client that sends compressed requests and reads nothing hold
// MAX_CONCURRENT_STREAMS replies per connection for as long as it
// likes. The client's grpc-accept-encoding allows identity replies
// always; its compressed requests are still read. Only a handler that
// has already sent its headers keeps its compression, and its reply is
// not counted.
func (s *Server) replyQueued(ctx context.Context, a *admission, resp any) {
	m, ok := resp.(proto.Message)
	if !ok || a.Context.Err() != nil {
		return
	}
	st, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ SendCompress() string })
	if !ok {
		return
	}
	if c := st.SendCompress(); c != "" && c != encoding.Identity && grpc.SetSendCompressor(ctx, encoding.Identity) != nil {
		return
	}
	n := proto.Size(m)
	if n > s.cfg.Limits.MaxSendMsgSize {
		return
	}
	p, ok := peer.FromContext(a.Context)
	if !ok {
		return
	}
	id := connID(p.Addr)
	if id == nil {
		return
	}
	if v, ok := s.conns.Load(id); ok {
		v.(*trackedConn).queued(int64(n) + 5) // and the message's 5-byte prefix
	}
}

// closeStalled closes the connection of a stream whose handler has been
// blocked in SendMsg for d, its client not reading: a client that grants
// no flow-control window would keep its replies in the server's memory
// for as long as it likes. Every stream on that connection ends; its
// client reconnects.
func (s *Server) closeStalled(ctx context.Context, method string, d time.Duration) {
	if ctx.Err() != nil {
		return // it ended in the meantime
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return
	}
	id := connID(p.Addr)
	if id == nil {
		return
	}
	v, ok := s.conns.Load(id)
	if !ok {
		return
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "closing a connection whose client stopped reading",
		slog.String("peer", p.Addr.String()),
		slog.String("method", shortMethod(method)),
		slog.Duration("unread_for", d))
	v.(net.Conn).Close()
}
