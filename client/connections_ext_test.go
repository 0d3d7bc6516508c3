package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/kuberpc/kuberpc/balancer/connections"
	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
)

// byPeer counts SayHello calls by the client address they came from (one
// per connection) and holds the calls named "block" until released.
type byPeer struct {
	example.Greeter
	mu      sync.Mutex
	calls   map[string]int
	entered chan struct{}
	release chan struct{}
}

func (b *byPeer) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	p, _ := peer.FromContext(ctx)
	b.mu.Lock()
	b.calls[p.Addr.String()]++
	b.mu.Unlock()
	if req.GetName() == "block" {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.Greeter.SayHello(ctx, req)
}

// counts returns the calls per connection, most first, and forgets them.
func (b *byPeer) counts() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int
	for _, n := range b.calls {
		out = append(out, n)
	}
	clear(b.calls)
	for i := range out { // largest first, few entries
		for j := i + 1; j < len(out); j++ {
			if out[j] > out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestConnectionsPerEndpoint: with two connections per endpoint, against
// a real server, one call at a time keeps to one connection, and of 24
// calls held at once the first connection takes DefaultSpillAt and the
// second the rest; outlier detection (on by default) sits above the
// policy.
func TestConnectionsPerEndpoint(t *testing.T) {
	t.Parallel()
	srv := &byPeer{calls: map[string]int{}, entered: make(chan struct{}, 24), release: make(chan struct{})}
	addr := serve(t, srv)
	conns := &connCounter{}
	cc, err := client.Dial("passthrough:///"+addr, client.WithConnectionsPerEndpoint(2),
		client.WithRegistry(prometheus.NewRegistry()), client.WithDialOptions(grpc.WithStatsHandler(conns)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := example.NewExampleServiceClient(cc)
	for range 20 {
		if _, err := c.SayHello(context.Background(), &example.Request{Name: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.counts(); len(got) != 1 {
		t.Errorf("20 calls one at a time came over connections %v, want all 20 over one", got)
	}
	// The second connection is made with the first, not when it is needed.
	for deadline := time.Now().Add(10 * time.Second); conns.n.Load() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections after 10s, want 2", conns.n.Load())
		}
	}
	if n := conns.n.Load(); n != 2 {
		t.Fatalf("%d connections to one endpoint, want 2", n)
	}
	time.Sleep(100 * time.Millisecond) // the second one's READY reaches the policy

	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.SayHello(context.Background(), &example.Request{Name: "block"}); err != nil {
				t.Error(err)
			}
		}()
	}
	for range 24 {
		select {
		case <-srv.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("24 calls did not all reach the server in 10s")
		}
	}
	got := srv.counts()
	close(srv.release)
	wg.Wait()
	if want := fmt.Sprint([]int{connections.DefaultSpillAt, 24 - connections.DefaultSpillAt}); fmt.Sprint(got) != want {
		t.Errorf("24 calls held at once came over connections %v, want %v (the first takes DefaultSpillAt)", got, want)
	}
}

func TestConnectionsPerEndpointOutOfRangeIsRefused(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, -1, 17} {
		_, err := client.Dial("passthrough:///x", client.WithConnectionsPerEndpoint(n))
		if want := fmt.Sprintf("connections per endpoint %d: want 1-16", n); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("WithConnectionsPerEndpoint(%d): err = %v, want %q", n, err, want)
		}
	}
}
