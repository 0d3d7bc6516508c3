// Command server serves the reference ExampleService and StreamService on
// the kuberpc runtime. Its configuration comes from flags and the
// conventional environment (PORT, METRICS_PORT, POD_NAME, ...; see
// server.LoadConfig), so the same binary runs locally and as a pod.
package main

import (
	"context"
	"fmt"
	"os"

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
	example.RegisterExampleServiceServer(s, example.Greeter{})
	example.RegisterStreamServiceServer(s, example.Greeter{})
	return s.Run(context.Background())
}
