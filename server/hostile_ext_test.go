package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// The hostile-client tests speak HTTP/2 with golang.org/x/net/http2's
// Framer to a kuberpc server in a child process (this test binary, run
// with hostileServerEnv), so that the server's memory is measured alone:
// the child reports its peak RSS (VmHWM) and the most handlers it ran at
// once when its stdin closes.

const hostileServerEnv = "KUBERPC_TEST_HOSTILE_SERVER"

// hostileGreeter counts the handlers running at once. "work" ignores
// its context for 20 ms, as a handler busy in a library call does.
type hostileGreeter struct {
	example.Greeter
	running, peak atomic.Int64
}

func (g *hostileGreeter) enter() func() {
	n := g.running.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	return func() { g.running.Add(-1) }
}

func (g *hostileGreeter) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	defer g.enter()()
	if req.GetName() == "work" {
		time.Sleep(20 * time.Millisecond)
	}
	return g.Greeter.SayHello(ctx, req)
}

func (g *hostileGreeter) Greetings(req *example.Request, stream example.StreamService_GreetingsServer) error {
	defer g.enter()()
	return g.Greeter.Greetings(req, stream)
}

// hostileStats is what the child reports when it stops.
type hostileStats struct {
	PeakHandlers int64 `json:"peak_handlers"`
	PeakRSS      int64 `json:"peak_rss"`
}

func runHostileServer() int {
	srv, err := serverFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	g := &hostileGreeter{}
	example.RegisterExampleServiceServer(srv, g)
	example.RegisterStreamServiceServer(srv, g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go srv.Serve(lis)
	fmt.Printf("ADDR %s\n", lis.Addr())
	io.Copy(io.Discard, os.Stdin)
	json.NewEncoder(os.Stdout).Encode(hostileStats{PeakHandlers: g.peak.Load(), PeakRSS: peakRSS()})
	return 0
}

// peakRSS is this process's VmHWM in bytes.
func peakRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// startHostile starts the child server with env and returns its address
// and the function that stops it and returns its stats.
func startHostile(t *testing.T, env ...string) (string, func() hostileStats) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{hostileServerEnv + "=1", "GORACE=atexit_sleep_ms=0", "LOG_LEVEL=error"}, env...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := bufio.NewReader(stdout)
	line, err := r.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		t.Fatalf("hostile server did not start: %q %v", line, err)
	}
	return addr, func() hostileStats {
		stdin.Close()
		var st hostileStats
		if err := json.NewDecoder(r).Decode(&st); err != nil {
			t.Fatalf("hostile server stats: %v", err)
		}
		return st
	}
}

// h2 is a raw HTTP/2 client connection: it writes what the test tells it
// and reads (and acknowledges) whatever the server sends.
type h2 struct {
	c    net.Conn
	mu   sync.Mutex // guards w, fr's writes and enc
	w    *bufio.Writer
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	next uint32
	// Frames the server sent, by type, and the stream of the latest
	// HEADERS; done is closed when the connection ends.
	headers, resets atomic.Int64
	data            atomic.Int64 // bytes of DATA received
	lastHeaders     atomic.Uint32
	done            chan struct{}
	// grant gives the server back the flow-control window of the DATA
	// it sends (a well-behaved client); off, it stalls once the window
	// is spent.
	grant atomic.Bool
	// gzip sends requests gzip-compressed and accepts gzip replies.
	gzip bool
	// statuses counts the grpc-status of the trailers received.
	statusMu sync.Mutex
	statuses map[string]int
}

func dialH2(t *testing.T, addr string, settings ...http2.Setting) *h2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return newH2(t, c, settings...)
}

// newH2 speaks HTTP/2 on c, which it closes at cleanup.
func newH2(t *testing.T, c net.Conn, settings ...http2.Setting) *h2 {
	t.Cleanup(func() { c.Close() })
	h := &h2{c: c, w: bufio.NewWriterSize(c, 64<<10), next: 1, done: make(chan struct{}), statuses: map[string]int{}}
	h.fr = http2.NewFramer(h.w, bufio.NewReader(c))
	h.fr.ReadMetaHeaders = hpack.NewDecoder(1<<20, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.mu.Lock()
	io.WriteString(h.w, http2.ClientPreface)
	h.fr.WriteSettings(settings...)
	h.w.Flush()
	h.mu.Unlock()
	go h.read()
	return h
}

func (h *h2) read() {
	defer close(h.done)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.mu.Lock()
				h.fr.WriteSettingsAck()
				h.w.Flush()
				h.mu.Unlock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				h.mu.Lock()
				h.fr.WritePing(true, f.Data)
				h.w.Flush()
				h.mu.Unlock()
			}
		case *http2.MetaHeadersFrame:
			h.headers.Add(1)
			h.lastHeaders.Store(f.StreamID)
			for _, hf := range f.RegularFields() {
				if hf.Name == "grpc-status" {
					h.statusMu.Lock()
					h.statuses[hf.Value]++
					h.statusMu.Unlock()
				}
			}
		case *http2.DataFrame:
			h.data.Add(int64(len(f.Data())))
			if n := uint32(len(f.Data())); n > 0 && h.grant.Load() {
				h.mu.Lock()
				h.fr.WriteWindowUpdate(0, n)
				if !f.StreamEnded() {
					h.fr.WriteWindowUpdate(f.StreamID, n)
				}
				h.w.Flush()
				h.mu.Unlock()
			}
		case *http2.RSTStreamFrame:
			h.resets.Add(1)
		}
	}
}

// open writes a request's HEADERS (split into CONTINUATIONs as needed)
// for method with the extra header fields, then, when msg is not nil, its
// message in DATA frames of at most 16 KiB; the stream ends with the
// message, or stays open without one. It returns the stream ID. Call flush to send.
func (h *h2) open(method string, extra []hpack.HeaderField, msg proto.Message) uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.next
	h.next += 2
	h.hbuf.Reset()
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: method},
		{Name: ":authority", Value: "hostile"}, {Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...) {
		h.enc.WriteField(f)
	}
	if h.gzip {
		for _, f := range []hpack.HeaderField{{Name: "grpc-encoding", Value: "gzip"}, {Name: "grpc-accept-encoding", Value: "gzip"}} {
			h.enc.WriteField(f)
		}
	}
	block := h.hbuf.Bytes()
	const chunk = 16 << 10
	first := block[:min(chunk, len(block))]
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(block) <= chunk})
	for rest := block[len(first):]; len(rest) > 0; {
		n := min(chunk, len(rest))
		h.fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	if msg != nil {
		b, _ := proto.Marshal(msg)
		var flag byte
		if h.gzip {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(b)
			zw.Close()
			b, flag = z.Bytes(), 1
		}
		frame := make([]byte, 5+len(b))
		frame[0] = flag
		binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
		copy(frame[5:], b)
		for len(frame) > chunk { // HTTP/2's default SETTINGS_MAX_FRAME_SIZE
			h.fr.WriteData(id, false, frame[:chunk])
			frame = frame[chunk:]
		}
		h.fr.WriteData(id, true, frame)
	}
	return id
}

func (h *h2) reset(id uint32) {
	h.mu.Lock()
	h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	h.mu.Unlock()
}

func (h *h2) flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.w.Flush()
}

// probeHealthUntil checks health every 50 ms until stop closes, each with
// a probe's 1 s timeout (5 s under the race detector, which slows the
// server several times over), and returns how many were answered SERVING and
// how many were made.
func probeHealthUntil(t *testing.T, addr string, stop <-chan struct{}) func() (ok, all int) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	hc := healthpb.NewHealthClient(cc)
	var okN, allN atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			allN.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				timeout := time.Second
				if raceEnabled {
					timeout = 5 * time.Second
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
					okN.Add(1)
				}
			}()
		}
	}()
	return func() (int, int) {
		wg.Wait()
		cc.Close()
		return int(okN.Load()), int(allN.Load())
	}
}

// checkRSS fails the test when the child's peak RSS passed bound (not
// under the race detector, which multiplies memory).
func checkRSS(t *testing.T, st hostileStats, bound int64) {
	t.Helper()
	t.Logf("server peak RSS %d MiB (bound %d MiB), most handlers at once %d", st.PeakRSS>>20, bound>>20, st.PeakHandlers)
	if !raceEnabled && st.PeakRSS > bound {
		t.Errorf("server peak RSS %d MiB; want ≤ %d MiB", st.PeakRSS>>20, bound>>20)
	}
}

// TestRapidResetIsBounded: 100,000 HEADERS+DATA / RST_STREAM pairs over 8
// connections (CVE-2023-44487's rapid reset) against handlers that ignore
// cancellation: the server never runs more than MAX_HANDLERS of them at
// once (each connection's own limit, 1,000 streams, does not see reset
// streams), health is answered throughout, and memory stays bounded.
func TestRapidResetIsBounded(t *testing.T) {
	t.Parallel()
	const maxHandlers, conns, pairs = 100, 8, 100_000
	addr, stop := startHostile(t, "MAX_HANDLERS="+strconv.Itoa(maxHandlers))
	done := make(chan struct{})
	health := probeHealthUntil(t, addr, done)
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		h := dialH2(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range pairs / conns {
				id := h.open("/example.ExampleService/SayHello", nil, &example.Request{Name: "work"})
				h.reset(id)
				if i%100 == 99 {
					if err := h.flush(); err != nil {
						t.Errorf("write: %v", err)
						return
					}
				}
			}
			// The server reads a connection's frames in order: once it
			// answers a last call, it has been through every pair.
			last := h.open("/example.ExampleService/SayHello", nil, &example.Request{Name: "last"})
			h.flush()
			for h.lastHeaders.Load() < last {
				select {
				case <-h.done:
					t.Errorf("the server closed a connection during the attack")
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d pairs over %d connections sent and worked through in %v", pairs, conns, time.Since(start).Round(time.Millisecond))
	close(done)
	ok, all := health()
	st := stop()
	if ok != all || all == 0 {
		t.Errorf("health answered %d of %d checks during the attack; want all", ok, all)
	}
	if st.PeakHandlers > maxHandlers {
		t.Errorf("%d handlers ran at once; want ≤ MAX_HANDLERS=%d", st.PeakHandlers, maxHandlers)
	}
	checkRSS(t, st, 200<<20)
}

// TestLargeHeadersHeldOpenAreBounded: 8 connections open 400 streams
// each with a 48 KiB header block and never send the request. Each
// admitted stream holds its headers; the server admits at most
// MAX_HANDLERS of them (refusing the rest before decoding anything
// more), answers health, and its memory stays bounded by MAX_HANDLERS ×
// MAX_HEADER_LIST_SIZE rather than by what the clients send (3,200 × 48
// KiB = 150 MiB of headers). A block over MAX_HEADER_LIST_SIZE is
// refused.
func TestLargeHeadersHeldOpenAreBounded(t *testing.T) {
	t.Parallel()
	const maxHandlers, conns, streams = 200, 8, 400
	// Adaptive shedding off: the handler cap alone must hold.
	addr, stop := startHostile(t, "MAX_HANDLERS="+strconv.Itoa(maxHandlers), "ADAPTIVE_SHEDDING=false")
	done := make(chan struct{})
	health := probeHealthUntil(t, addr, done)
	var hs []*h2
	for c := range conns {
		h := dialH2(t, addr)
		hs = append(hs, h)
		for i := range streams {
			// Distinct values: nothing for HPACK to share between streams.
			v := strings.Repeat(string(rune('a'+(c+i)%26)), 48<<10-8) + fmt.Sprintf("%08d", c*streams+i)
			h.open("/example.ExampleService/SayHello", []hpack.HeaderField{{Name: "x-big", Value: v}}, nil)
			if i%20 == 19 {
				if err := h.flush(); err != nil {
					t.Fatalf("write: %v", err)
				}
			}
		}
		h.flush()
	}
	// An oversized block is refused, not decoded.
	over := dialH2(t, addr)
	over.open("/example.ExampleService/SayHello", []hpack.HeaderField{{Name: "x-huge", Value: strings.Repeat("z", 80<<10)}}, &example.Request{})
	over.flush()
	time.Sleep(time.Second) // held open
	close(done)
	ok, all := health()
	var refused int64
	for _, h := range hs {
		refused += h.headers.Load() + h.resets.Load()
	}
	st := stop()
	if ok != all || all == 0 {
		t.Errorf("health answered %d of %d checks with large headers held open; want all", ok, all)
	}
	if want := int64(conns*streams - maxHandlers); refused < want {
		t.Errorf("%d of %d streams were answered or reset; want at least the %d over MAX_HANDLERS=%d refused", refused, conns*streams, want, maxHandlers)
	}
	if over.headers.Load()+over.resets.Load() == 0 {
		select {
		case <-over.done: // the connection was closed: refused too
		default:
			t.Error("a header block over MAX_HEADER_LIST_SIZE was neither refused nor the connection closed")
		}
	}
	checkRSS(t, st, 150<<20)
}

// TestStalledUnaryReadersAreClosed: a client that grants no flow-control
// window (SETTINGS_INITIAL_WINDOW_SIZE 0) and calls a unary method leaves
// each reply queued in grpc-go after its handler returned, where no
// handler count sees it; once 256 KiB of them are unread, its connection
// is closed STALLED_WRITE_TIMEOUT later. A client that reads the same
// replies keeps its one connection, busy and then idle.
func TestStalledUnaryReadersAreClosed(t *testing.T) {
	t.Parallel()
	addr, stop := startHostile(t, "STALLED_WRITE_TIMEOUT=1s")
	defer stop()
	checkStalledUnaryReader(t, dialH2(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}), nRequest, time.Second, "tcp", addr)
}

// nRequest is a SayHello request whose reply is 64 KiB.
var nRequest = &example.Request{Name: strings.Repeat("n", 64<<10)}

// TestStalledUnaryReadersOfCompressedRepliesAreClosed: the same with
// gzip-compressed requests, whose replies grpc-go would compress too, to
// a size the server does not know before it is queued: before, they were
// not counted, so such a reader's connection was never closed. Now the
// replies go uncompressed while the stalled-write bound is on, and are
// counted. The names are random letters, so that compressed replies
// would not have been small either.
func TestStalledUnaryReadersOfCompressedRepliesAreClosed(t *testing.T) {
	t.Parallel()
	addr, stop := startHostile(t, "STALLED_WRITE_TIMEOUT=1s")
	defer stop()
	stalled := dialH2(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	stalled.gzip = true
	rnd := rand.New(rand.NewPCG(1, 2))
	name := make([]byte, 64<<10)
	for i := range name {
		name[i] = 'a' + byte(rnd.IntN(26))
	}
	checkStalledUnaryReader(t, stalled, &example.Request{Name: string(name)}, time.Second, "tcp", addr)
}

// TestStalledUnaryReadersAreClosedOverUnixSockets: the same over
// Unix-domain sockets, whose peers all print as "@": before, their
// connections were told apart by those strings, so a stall was charged
// to whichever had connected last.
func TestStalledUnaryReadersAreClosedOverUnixSockets(t *testing.T) {
	t.Parallel()
	cfg := quickDrain()
	cfg.Limits.StalledWriteTimeout = time.Second
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()), server.WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	path := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Shutdown(context.Background())
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	checkStalledUnaryReader(t, newH2(t, c, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}), nRequest, time.Second, "unix", path)
}

// checkStalledUnaryReader has stalled, a connection that grants no window,
// call SayHello 8 times with 64 KiB names, while a client dialing network
// addr reads the same replies with 8 callers for 3 timeouts, idles 3
// more and calls again. The stalled connection must be closed, no sooner
// than timeout (the server's STALLED_WRITE_TIMEOUT); the reader must keep
// its one connection and every call.
func checkStalledUnaryReader(t *testing.T, stalled *h2, req *example.Request, timeout time.Duration, network, addr string) {
	t.Helper()
	var dials atomic.Int32
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, a)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := example.NewExampleServiceClient(cc)
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.SayHello(ctx, req)
		return err
	}
	// The reader connects after the stalled connection and before its
	// calls, so a server that confused the two would charge the stall to
	// the reader.
	if err := call(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	leaveUnread(t, stalled, req)
	var wg sync.WaitGroup
	var calls atomic.Int64
	for range 8 {
		wg.Go(func() {
			for time.Since(begin) < 3*timeout {
				calls.Add(1)
				if err := call(); err != nil {
					t.Errorf("a reading client's call: %v", err)
					return
				}
			}
		})
	}
	select {
	case <-stalled.done:
		if took := time.Since(begin); took < timeout {
			t.Errorf("the stalled connection was closed %v in; want STALLED_WRITE_TIMEOUT=%v after the replies were queued", took, timeout)
		}
		t.Logf("stalled connection closed %v in", time.Since(begin).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Errorf("the connection that read none of its 8 replies of 64 KiB is open 10s in; want it closed after STALLED_WRITE_TIMEOUT=%v", timeout)
	}
	wg.Wait()
	time.Sleep(3 * timeout) // idle, with whatever backlog the reads left
	if err := call(); err != nil {
		t.Errorf("a reading client's call after an idle spell: %v", err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the reading client dialed %d times (%d calls); want its one connection kept", n, calls.Load())
	}
}

// leaveUnread has stalled, a connection that grants no window, call
// SayHello with req 8 times: replies it will never read.
func leaveUnread(t *testing.T, stalled *h2, req *example.Request) {
	t.Helper()
	for range 8 {
		stalled.open("/example.ExampleService/SayHello", nil, req)
	}
	if err := stalled.flush(); err != nil {
		t.Fatal(err)
	}
}

// TestStalledReadersAreBounded: clients that grant no flow-control window
// (SETTINGS_INITIAL_WINDOW_SIZE 0, never a WINDOW_UPDATE). Those calling
// a server-streaming method, whose handler blocks in SendMsg once its
// 64 KiB write quota is used, have their connections closed
// STALLED_WRITE_TIMEOUT into the stall, which ends their handlers. Those
// calling a unary method leave one reply each queued in grpc-go after the
// handler returned, 50 KiB per connection here, under the 256 KiB that
// gets a connection watched (TestStalledUnaryReadersAreClosed); they are
// bounded per connection by MAX_CONCURRENT_STREAMS. Health is answered
// throughout and memory stays bounded.
func TestStalledReadersAreBounded(t *testing.T) {
	t.Parallel()
	const conns, streams = 8, 50
	addr, stop := startHostile(t, "STALLED_WRITE_TIMEOUT=1s")
	done := make(chan struct{})
	health := probeHealthUntil(t, addr, done)
	var streaming []*h2
	var flushed []time.Time
	name := strings.Repeat("n", 1<<10) // 50 requests fit in the connection window of 64 KiB
	for c := range conns {
		h := dialH2(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		for range streams {
			if c%2 == 0 {
				h.open("/example.StreamService/Greetings", nil, &example.Request{Id: example.MaxGreetings, Name: name})
			} else {
				h.open("/example.ExampleService/SayHello", nil, &example.Request{Name: name})
			}
		}
		if err := h.flush(); err != nil {
			t.Fatal(err)
		}
		if c%2 == 0 {
			streaming, flushed = append(streaming, h), append(flushed, time.Now())
		}
	}
	start := time.Now()
	for i, h := range streaming {
		select {
		case <-h.done:
			// Its handlers blocked after the requests were sent, so
			// the stall it was closed for began after flushed[i].
			if open := time.Since(flushed[i]); open < time.Second {
				t.Errorf("streaming connection %d closed %v after its requests; want no sooner than STALLED_WRITE_TIMEOUT=1s", i, open)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("streaming connection %d still open 10s into the stall; want it closed after STALLED_WRITE_TIMEOUT=1s", i)
		}
	}
	t.Logf("stalled streaming connections closed after %v", time.Since(start).Round(time.Millisecond))
	close(done)
	ok, all := health()
	st := stop()
	if ok != all || all == 0 {
		t.Errorf("health answered %d of %d checks with stalled readers; want all", ok, all)
	}
	checkRSS(t, st, 150<<20)
}

// TestSlowStreamReaderIsNotClosed: a client that reads a server stream
// slowly, granting 64 KiB of window every 600 ms, leaves the handler's
// SendMsg blocked for most of each interval and for longer than
// STALLED_WRITE_TIMEOUT=1s in all, but never one SendMsg for 1 s: its
// connection stays open, and the stream keeps moving.
func TestSlowStreamReaderIsNotClosed(t *testing.T) {
	t.Parallel()
	addr, _ := startHostile(t, "STALLED_WRITE_TIMEOUT=1s")
	h := dialH2(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	id := h.open("/example.StreamService/Greetings", nil, &example.Request{Id: example.MaxGreetings, Name: strings.Repeat("n", 1<<10)})
	if err := h.flush(); err != nil {
		t.Fatal(err)
	}
	const window = 64 << 10
	for i := range 7 {
		select {
		case <-h.done:
			t.Fatalf("connection closed %d grants into a slow read (600 ms apart); want it kept: no SendMsg stayed blocked for STALLED_WRITE_TIMEOUT=1s", i)
		case <-time.After(600 * time.Millisecond):
		}
		h.mu.Lock()
		h.fr.WriteWindowUpdate(0, window)
		h.fr.WriteWindowUpdate(id, window)
		err := h.w.Flush()
		h.mu.Unlock()
		if err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
	}
	if n := h.data.Load(); n < 6*window {
		t.Errorf("the stream moved %d bytes over 7 grants of %d; want at least 6 grants' worth", n, window)
	}
}

// TestConnectionFloodIsBounded: 4,000 connections that send the HTTP/2
// preface and then nothing, against MAX_CONNECTIONS=1000: the server
// holds 1,000 and closes the rest as they come, so its memory stays
// bounded (about 25 KiB a held connection: without the cap, as many
// connections as a client opens).
func TestConnectionFloodIsBounded(t *testing.T) {
	t.Parallel()
	const maxConns, conns = 1000, 4000
	addr, stop := startHostile(t, fmt.Sprintf("MAX_CONNECTIONS=%d", maxConns))
	var hs []*h2
	for range conns {
		hs = append(hs, dialH2(t, addr))
	}
	time.Sleep(time.Second)
	held := 0
	for _, h := range hs {
		select {
		case <-h.done:
		default:
			held++
		}
	}
	st := stop()
	if held != maxConns {
		t.Errorf("%d of %d connections held; want MAX_CONNECTIONS=%d", held, conns, maxConns)
	}
	checkRSS(t, st, 100<<20)
}
