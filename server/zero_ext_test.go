package server_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// TestExplicitZeroIsHonoured: a setting of 0 means 0 and differs from
// unset, from the environment through New to the running server.
func TestExplicitZeroIsHonoured(t *testing.T) {
	env := map[string]string{"PORT": "0", "METRICS_PORT": "0", "DRAIN_DELAY": "0", "MAX_CONNECTION_AGE": "0", "MAX_CONNECTION_AGE_GRACE": "0", "KEEPALIVE_TIME": "0",
		"STREAM_WORKERS": "0"}
	cfg, err := server.LoadConfig(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	got := srv.Config()
	if got.Port != 0 || got.MetricsPort != 0 || got.Drain.PropagationDelay != 0 || got.Keepalive.MaxConnectionAge != 0 ||
		got.Keepalive.MaxConnectionAgeGrace != 0 || got.Keepalive.Time != 0 || got.Transport.StreamWorkers != 0 {
		t.Errorf("New turned explicit zeros into defaults: port %d, metrics port %d, drain delay %v, max age %v, grace %v, keepalive %v, stream workers %d",
			got.Port, got.MetricsPort, got.Drain.PropagationDelay, got.Keepalive.MaxConnectionAge, got.Keepalive.MaxConnectionAgeGrace, got.Keepalive.Time, got.Transport.StreamWorkers)
	}
	// Unset is not zero.
	def, err := server.LoadConfig(nil, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if def.Drain.PropagationDelay == 0 || def.Keepalive.MaxConnectionAge == 0 || def.Port == 0 || def.Keepalive.MaxConnectionAgeGrace != server.Forever ||
		def.Transport.StreamWorkers == 0 {
		t.Errorf("defaults = %+v; want non-zero drain delay, max age, port and stream workers, grace Forever", def)
	}

	// PORT=0: the server listens on a port of its own choosing.
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	var addr net.Addr
	for deadline := time.Now().Add(5 * time.Second); addr == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		addr = srv.Addr()
	}
	if addr == nil || strings.HasSuffix(addr.String(), ":0") {
		t.Fatalf("Addr() = %v; want the chosen port", addr)
	}
	_, port, _ := net.SplitHostPort(addr.String())
	cc := dial(t, net.JoinHostPort("127.0.0.1", port))
	if _, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "zero"}); err != nil {
		t.Fatalf("SayHello on the chosen port: %v", err)
	}
	// DRAIN_DELAY=0: Run returns without waiting out the default 5s delay.
	begin := time.Now()
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(begin); d >= server.DefaultConfig().Drain.PropagationDelay {
		t.Errorf("drain with DRAIN_DELAY=0 took %v, as long as the default delay", d)
	}
}

func TestZeroThatCannotWorkIsRejected(t *testing.T) {
	for _, tc := range []struct{ env, value, want string }{
		{"MAX_CONCURRENT_STREAMS", "0", "invalid MAX_CONCURRENT_STREAMS 0: must be at least 1"},
		{"KEEPALIVE_TIMEOUT", "0", "invalid KEEPALIVE_TIMEOUT 0s: must be positive when KEEPALIVE_TIME is set"},
		{"STREAM_WINDOW", "0", "invalid STREAM_WINDOW 0: must be at least 65536 bytes"},
	} {
		_, err := server.LoadConfig(nil, func(k string) (string, bool) { return tc.value, k == tc.env })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%s: err = %v; want %q", tc.env, tc.value, err, tc.want)
		}
	}
}
