package client_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/balancer/connections"
	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
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

// connTracker remembers the connections a listener accepted.
type connTracker struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *connTracker) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// closeAllButFirst closes every connection but the first accepted.
func (l *connTracker) closeAllButFirst() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns[min(1, len(l.conns)):] {
		c.Close()
	}
	l.conns = l.conns[:min(1, len(l.conns))]
}

// TestNoCallWaitsForASecondConnectionThatIsGone: while calls spread over
// two connections, the server drops the second one over and over and
// keeps the first. A call that picked the second just as it dropped must
// be picked again at once. Before, the policy published no new picker
// when a second connection changed state, and such a call waited for
// the child's next picker, which nothing sent while the first connection
// stayed up: make bench failed so after a server's maximum connection
// age ended one ("context deadline exceeded while waiting for
// connections to become ready"). Calls cut by a dropped connection fail
// UNAVAILABLE, as they would without the policy; none may time out.
func TestNoCallWaitsForASecondConnectionThatIsGone(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &connTracker{Listener: l}
	replicas.ServeOn(t, lis, replicas.ExampleService(example.Greeter{}))
	cc, err := client.Dial("passthrough:///"+l.Addr().String(), client.WithRegistry(prometheus.NewRegistry()), client.WithoutOutlierDetection(),
		client.WithBalancer(connections.Name, `{"perEndpoint":2,"spillAt":0,"childPolicy":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := example.NewExampleServiceClient(cc)
	var wg sync.WaitGroup
	var calls, unavailable, timedOut atomic.Int64
	end := time.Now().Add(3 * time.Second)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && calls.Load() < 2_000_000 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := c.SayHello(ctx, &example.Request{Name: "x"})
				cancel()
				calls.Add(1)
				switch status.Code(err) {
				case codes.OK:
				case codes.Unavailable:
					unavailable.Add(1)
				default:
					if timedOut.Add(1) <= 3 {
						t.Errorf("call failed: %v", err)
					}
				}
			}
		}()
	}
	for time.Now().Before(end) {
		time.Sleep(50 * time.Millisecond)
		lis.closeAllButFirst()
	}
	wg.Wait()
	t.Logf("%d calls, %d cut (UNAVAILABLE), %d failed otherwise", calls.Load(), unavailable.Load(), timedOut.Load())
}

// TestConnectionsPolicyInsideItselfIsRefused: kuberpc_connections as the
// balancer and WithConnectionsPerEndpoint too would multiply the
// connections to each endpoint past the 16 either bounds.
func TestConnectionsPolicyInsideItselfIsRefused(t *testing.T) {
	t.Parallel()
	_, err := client.Dial("passthrough:///x", client.WithConnectionsPerEndpoint(16),
		client.WithBalancer(connections.Name, `{"perEndpoint":16,"childPolicy":[{"round_robin":{}}]}`))
	if want := "kuberpc_connections inside itself"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
}
