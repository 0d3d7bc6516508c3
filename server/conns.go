package server

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/peer"
)

// connKey identifies an accepted connection by its two ends, as grpc-go's
// peer.Peer gives them to a handler.
type connKey struct{ local, remote string }

// trackingListener records the connections Serve accepts, so that one can
// be closed when a client stops reading its replies (see closeStalled):
// grpc-go gives no handle on a stream's transport, and a stream whose
// client grants no flow-control window keeps its replies in memory for
// as long as the connection lives.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s, key: connKey{c.LocalAddr().String(), c.RemoteAddr().String()}}
	l.s.conns.Store(tc.key, tc)
	return tc, nil
}

// trackedConn removes itself from the server's connections when closed.
type trackedConn struct {
	net.Conn
	s    *Server
	key  connKey
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.s.conns.Delete(c.key) })
	return c.Conn.Close()
}

// SyscallConn passes the underlying connection's through, for grpc-go's
// socket options and channelz.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

// closeStalled closes the connection of a stream whose handler returned d
// ago and whose replies the client has still not read (the stream would
// have ended otherwise): a client that grants no flow-control window
// would keep them in the server's memory for as long as it likes. Every
// stream on that connection ends; its client reconnects.
func (s *Server) closeStalled(ctx context.Context, method string, d time.Duration) {
	if ctx.Err() != nil {
		return // it ended in the meantime
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil || p.LocalAddr == nil {
		return
	}
	v, ok := s.conns.Load(connKey{p.LocalAddr.String(), p.Addr.String()})
	if !ok {
		return
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "closing a connection whose client stopped reading",
		slog.String("peer", p.Addr.String()),
		slog.String("method", shortMethod(method)),
		slog.Duration("unread_for", d))
	v.(net.Conn).Close()
}
