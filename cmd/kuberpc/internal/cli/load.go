package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/loadgen"
)

func loadCmd(g *globals) *cobra.Command {
	var policy, method string
	var m methodFlags
	var o loadgen.Options
	var sec securityFlags
	c := &cobra.Command{
		Use:   "load",
		Short: "Drive a unary method (the reference ExampleService's SayHello unless --call names another) with an open loop, plus Chat streams",
		Long: `Drive load ghz-like: unary calls at a fixed rate, each on its own schedule
(a slow server cannot slow the load down), plus the reference service's
bidirectional Chat streams kept open; every outcome is counted with its
status code and the address that answered. Prints a line per second, then
a summary.

The calls are the reference ExampleService's SayHello, or, with --call, any
unary method of any service, with the request -d gives, its types from
server reflection or --proto/--protoset as kuberpc call finds them. With
--call and no --target, the Service that serves the method is found as
kuberpc call finds it. The calls of --call are not declared idempotent,
so the client retries only those a server refused before its handler ran
and a load test counts every other failure (SayHello is idempotent, and
retried as kuberpc clients retry it).`,
		Example: `  kuberpc load --rate 1000 --duration 30s --streams 20
  kuberpc load --target kubernetes:///example.shop:grpc --balancer p2c_ewma
  kuberpc load --call shop.inventory.v1.Inventory/GetItem -d '{"sku":"a1"}' --rate 500`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case o.Rate < 0 || o.Rate > loadgen.MaxRate:
				return usagef("--rate %d: must be 0 to %d (run several processes for more)", o.Rate, loadgen.MaxRate)
			case o.Streams < 0 || o.Streams > loadgen.MaxStreams:
				return usagef("--streams %d: must be 0 to %d (run several processes for more)", o.Streams, loadgen.MaxStreams)
			case o.Duration <= 0:
				return usagef("--duration %s: must be positive", o.Duration)
			case o.Deadline <= 0:
				return usagef("--deadline %s: must be positive", o.Deadline)
			case method != "" && o.Streams > 0:
				return usagef("--streams %d: the streams are the reference service's Chat; with --call, leave --streams at 0", o.Streams)
			}
			if method == "" {
				for _, f := range []string{"data", "port", "proto", "protoset", "import-path"} {
					if cmd.Flags().Changed(f) {
						return usagef("--%s: only with --call (SayHello's request is fixed)", f)
					}
				}
			}
			var svc, name string
			if method != "" {
				var err error
				if svc, name, err = splitMethod(method); err != nil {
					return usagef("--call %v", err)
				}
				if err := m.readData(cmd.InOrStdin()); err != nil {
					return err
				}
			}
			secOpts, err := sec.options()
			if err != nil {
				return err
			}
			headers, err := m.metadata(sec.tls.Dir != "")
			if err != nil {
				return err
			}
			dial := func(target string) (*grpc.ClientConn, error) {
				opts := append([]client.Option{client.WithRegistry(prometheus.NewRegistry()), client.WithBalancer(policy, "")}, secOpts...)
				if method == "" {
					opts = append(opts, client.WithIdempotentMethods("example.ExampleService/SayHello"))
				}
				more, err := m.dialOptions(g, target)
				if err != nil {
					return nil, err
				}
				return client.Dial(target, append(opts, more...)...)
			}
			target, err := m.givenTarget(g)
			if err != nil {
				return err
			}
			switch {
			case target != "":
			case method != "":
				if target, err = findService(cmd.Context(), g, svc, m.port, dial); err != nil {
					return m.unreachable("kubernetes:", err)
				}
			default:
				_, ns, err := g.restConfig()
				if err != nil {
					return err
				}
				target = "kubernetes:///example." + ns + ":grpc"
			}
			cc, err := dial(target)
			if err != nil {
				return err
			}
			defer cc.Close()
			what := "SayHello"
			ctx := metadata.NewOutgoingContext(cmd.Context(), headers)
			if method != "" {
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				md, err := m.descriptor(ctx, cc, target, svc, name)
				cancel()
				if err != nil {
					return m.unreachable(target, err)
				}
				if md.IsStreamingClient() || md.IsStreamingServer() {
					return usagef("--call %s: a streaming method; load makes unary calls", method)
				}
				req, err := oneRequest(md, m.data)
				if err != nil {
					return err
				}
				full := fmt.Sprintf("/%s/%s", svc, name)
				o.Call = func(ctx context.Context, _ int, opts ...grpc.CallOption) error {
					return cc.Invoke(ctx, full, req, dynamicpb.NewMessage(md.Output()), opts...)
				}
				what = svc + "/" + name
			}
			fmt.Fprintf(g.out, "load on %s: %d %s calls/s, %d streams, for %s (deadline %s)\n", target, o.Rate, what, o.Streams, o.Duration, o.Deadline)
			o.Progress = g.out
			res, err := loadgen.Run(ctx, cc, o)
			if err != nil {
				return err
			}
			res.Summary(g.out)
			if res.Failed() > 0 || res.HungStreams > 0 {
				return exitError{1, fmt.Errorf("%d calls failed, %d streams hung", res.Failed(), res.HungStreams)}
			}
			return nil
		},
	}
	m.register(c, "the request of each --call, as JSON; @FILE reads it from FILE, @ from standard input")
	c.Flags().Lookup("target").Usage = "gRPC target (default: with --call, the Service of the namespace that serves it, found through grpc.health.v1; else kubernetes:///example.<namespace>:grpc)"
	c.Flags().StringVar(&method, "call", "", "the unary method to call, package.Service/Method (default: the reference example.ExampleService/SayHello)")
	c.Flags().StringVar(&policy, "balancer", "round_robin", "load-balancing policy")
	c.Flags().IntVar(&o.Rate, "rate", 100, "calls per second")
	c.Flags().DurationVar(&o.Duration, "duration", 10*time.Second, "how long to drive load")
	c.Flags().IntVar(&o.Streams, "streams", 0, "Chat streams of the reference service to keep open")
	c.Flags().DurationVar(&o.Deadline, "deadline", time.Second, "deadline of each call; a stream silent this long is hung")
	sec.register(c)
	return c
}
