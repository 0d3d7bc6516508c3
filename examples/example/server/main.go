// Command server serves the reference ExampleService and StreamService on
// the kuberpc runtime. Its configuration comes from flags and the
// conventional environment (PORT, METRICS_PORT, POD_NAME, ...; see
// server.LoadConfig), so the same binary runs locally and as a pod.
//
// For fault tests, EXAMPLE_FAIL=unavailable makes every SayHello fail
// with UNAVAILABLE while health still says SERVING: a replica broken in a
// way its probes do not see. For autoscaling tests, EXAMPLE_CPU_PER_CALL
// (a duration, e.g. 5ms) makes every SayHello burn that much CPU.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "example server:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := server.LoadConfig(os.Args[1:], os.LookupEnv)
	if err != nil {
		return err
	}
	s, err := server.New(server.WithConfig(cfg))
	if err != nil {
		return err
	}
	var greeter example.ExampleServiceServer = example.Greeter{}
	switch v := os.Getenv("EXAMPLE_FAIL"); v {
	case "":
	case "unavailable":
		greeter = failing{}
	default:
		return fmt.Errorf("EXAMPLE_FAIL=%q: the only fault is \"unavailable\"", v)
	}
	if v := os.Getenv("EXAMPLE_CPU_PER_CALL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > time.Second {
			return fmt.Errorf("EXAMPLE_CPU_PER_CALL=%q: want a duration from 1ns to 1s", v)
		}
		greeter = burning{greeter, d}
	}
	example.RegisterExampleServiceServer(s, greeter)
	example.RegisterStreamServiceServer(s, example.Greeter{})
	return s.Run(context.Background())
}

// failing fails every SayHello with UNAVAILABLE.
type failing struct{ example.Greeter }

func (failing) SayHello(context.Context, *example.Request) (*example.Response, error) {
	return nil, status.Error(codes.Unavailable, "example: EXAMPLE_FAIL=unavailable")
}

// burning burns d of CPU in every SayHello, then answers as next does.
type burning struct {
	example.ExampleServiceServer
	d time.Duration
}

func (b burning) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	for start := time.Now(); time.Since(start) < b.d; {
	}
	return b.ExampleServiceServer.SayHello(ctx, req)
}
