package server_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// payloads records the sizes of the messages a client sends and
// receives, as they are and as they went on the wire.
type payloads struct {
	mu        sync.Mutex
	out, in   []int // as they are
	outW, inW []int // compressed, as on the wire
}

func (p *payloads) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (p *payloads) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (p *payloads) HandleConn(context.Context, stats.ConnStats)                       {}
func (p *payloads) HandleRPC(_ context.Context, s stats.RPCStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s := s.(type) {
	case *stats.OutPayload:
		p.out, p.outW = append(p.out, s.Length), append(p.outW, s.CompressedLength)
	case *stats.InPayload:
		p.in, p.inW = append(p.in, s.Length), append(p.inW, s.CompressedLength)
	}
}

// gzipCall calls SayHello on a server with cfg with a gzip-compressed
// request, and returns the sizes of its request and reply.
func gzipCall(t *testing.T, cfg server.Config, name string) (*payloads, error) {
	t.Helper()
	f := start(t, cfg)
	p := &payloads{}
	cc, err := grpc.NewClient("passthrough:///"+f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(p))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: name}, grpc.UseCompressor(gzip.Name))
	if err == nil && resp.GetMessage() != "Hello, "+name+"!" {
		t.Errorf("SayHello answered %.40q…, want the greeting", resp.GetMessage())
	}
	return p, err
}

// TestCompressedCallsAreAnsweredUncompressed: a gzip-compressed request
// is read, and answered uncompressed while STALLED_WRITE_TIMEOUT is on
// (a compressed reply could not be counted against the stalled-reader
// bound; see TestStalledUnaryReadersOfCompressedRepliesAreClosed); with
// it off, grpc-go's own choice, the request's encoding, is kept.
func TestCompressedCallsAreAnsweredUncompressed(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("compressible ", 1000)
	p, err := gzipCall(t, quickDrain(), name)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.out) != 1 || p.outW[0] >= p.out[0]/4 {
		t.Errorf("request sizes %v, on the wire %v; want it compressed", p.out, p.outW)
	}
	if len(p.in) != 1 || p.inW[0] != p.in[0] {
		t.Errorf("reply sizes %v, on the wire %v; want it uncompressed", p.in, p.inW)
	}

	cfg := quickDrain()
	cfg.Limits.StalledWriteTimeout = server.Forever
	p, err = gzipCall(t, cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.in) != 1 || p.inW[0] >= p.in[0]/4 {
		t.Errorf("STALLED_WRITE_TIMEOUT=forever: reply sizes %v, on the wire %v; want it compressed as the request was", p.in, p.inW)
	}
}

// TestCompressionBombIsRefused: a request of a few KiB that decompresses
// past MAX_RECV_MSG_SIZE is refused, naming the limit, and the server
// goes on serving.
func TestCompressionBombIsRefused(t *testing.T) {
	t.Parallel()
	cfg := quickDrain()
	_, err := gzipCall(t, cfg, strings.Repeat("0", 2*cfg.Limits.MaxRecvMsgSize))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") {
		t.Errorf("a request decompressing to twice MAX_RECV_MSG_SIZE: %v; want RESOURCE_EXHAUSTED naming the limit", err)
	}
	if _, err := gzipCall(t, cfg, "after"); err != nil {
		t.Errorf("a compressed call after the bomb: %v", err)
	}
}
