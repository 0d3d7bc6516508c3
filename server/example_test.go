package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// A service author registers services on a Server and calls Run, which
// serves until SIGTERM and then drains. Here the server is served on a
// listener of its own and shut down by hand.
func Example() {
	cfg, err := server.LoadConfig([]string{"--drain-delay=10ms"}, func(string) (string, bool) { return "", false })
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		fmt.Println(err)
		return
	}
	example.RegisterExampleServiceServer(srv, example.Greeter{})

	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	// In a program: srv.Run(context.Background()).
	fmt.Println("terminationGracePeriod:", cfg.Drain.TerminationGracePeriod())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(ctx))
	// Output:
	// terminationGracePeriod: 25.01s
	// shutdown: <nil>
}

// LoadConfig names the setting that is wrong.
func ExampleLoadConfig() {
	_, err := server.LoadConfig(nil, func(k string) (string, bool) {
		if k == "PORT" {
			return "99999", true
		}
		return "", false
	})
	fmt.Println(err)
	// Output:
	// invalid PORT 99999: must be a port number in 1-65535, or 0 for a free port
}
