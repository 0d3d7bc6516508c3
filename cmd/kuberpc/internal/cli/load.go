package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/loadgen"
	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

func loadCmd(g *globals) *cobra.Command {
	var target, policy string
	var o loadgen.Options
	var sec securityFlags
	c := &cobra.Command{
		Use:   "load",
		Short: "Drive the reference ExampleService with an open loop of SayHello calls and long-lived Chat streams",
		Long: `Drive load ghz-like: SayHello calls at a fixed rate, each on its own schedule
(a slow server cannot slow the load down), plus bidirectional Chat streams
kept open; every outcome is counted with its status code and the address
that answered. Prints a line per second, then a summary.`,
		Example: `  kuberpc load --rate 1000 --duration 30s --streams 20
  kuberpc load --target kubernetes:///example.shop:grpc --balancer p2c_ewma`,
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
			}
			if target == "" {
				_, ns, err := g.restConfig()
				if err != nil {
					return err
				}
				target = "kubernetes:///example." + ns + ":grpc"
			}
			secOpts, err := sec.options()
			if err != nil {
				return err
			}
			opts := append([]client.Option{client.WithRegistry(prometheus.NewRegistry()), client.WithBalancer(policy, ""),
				client.WithIdempotentMethods("example.ExampleService/SayHello")}, secOpts...)
			if strings.HasPrefix(target, "kubernetes:") {
				opts = append(opts, client.WithDialOptions(grpc.WithResolvers(kuberesolver.NewBuilder(kuberesolver.WithKubeconfig(g.kubeconfigPath())))))
			}
			cc, err := client.Dial(target, opts...)
			if err != nil {
				return err
			}
			defer cc.Close()
			fmt.Fprintf(g.out, "load on %s: %d calls/s, %d streams, for %s (deadline %s)\n", target, o.Rate, o.Streams, o.Duration, o.Deadline)
			o.Progress = g.out
			res, err := loadgen.Run(cmd.Context(), cc, o)
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
	c.Flags().StringVar(&target, "target", "", "gRPC target (default kubernetes:///example.<namespace>:grpc)")
	c.Flags().StringVar(&policy, "balancer", "round_robin", "load-balancing policy")
	c.Flags().IntVar(&o.Rate, "rate", 100, "SayHello calls per second")
	c.Flags().DurationVar(&o.Duration, "duration", 10*time.Second, "how long to drive load")
	c.Flags().IntVar(&o.Streams, "streams", 0, "Chat streams to keep open")
	c.Flags().DurationVar(&o.Deadline, "deadline", time.Second, "deadline of each call; a stream silent this long is hung")
	sec.register(c)
	return c
}
