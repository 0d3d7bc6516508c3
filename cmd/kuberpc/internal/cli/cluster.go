package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent"
)

func clusterCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "Run the local Kubernetes: real control plane, pods as local processes"}
	opts := func() cluster.Options { return clusterOptions(g) }
	c.AddCommand(&cobra.Command{
		Use: "up", Short: "Start the local cluster (builds the control plane on first use)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lc, err := cluster.Up(cmd.Context(), opts())
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "\nlocal cluster ready\n  kubeconfig: %s (also context \"kuberpc\" in your kubeconfig)\n  kubectl:    %s\n", lc.Kubeconfig, lc.Bin.Path("kubectl"))
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use: "build", Short: "Build (or find cached) the control-plane binaries, showing progress", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := cluster.Binaries(cmd.Context(), opts())
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "control-plane binaries ready in %s\n", set.Dir)
			return nil
		},
	})
	var purge bool
	down := &cobra.Command{
		Use: "down", Short: "Stop every process of the local cluster and remove its network", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := cluster.Down(opts(), purge); err != nil {
				return err
			}
			fmt.Fprintln(g.out, "local cluster stopped")
			return nil
		},
	}
	down.Flags().BoolVar(&purge, "purge", false, "also delete the cluster's state (etcd data, certificates)")
	c.AddCommand(down)
	c.AddCommand(&cobra.Command{
		Use: "status", Short: "Show which components run", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			comps, err := cluster.Status(opts())
			fmt.Fprintf(g.out, "%-25s %-8s %s\n", "COMPONENT", "RUNNING", "PID")
			for _, c := range comps {
				pid := "-"
				if c.Running {
					pid = fmt.Sprint(c.PID)
				}
				fmt.Fprintf(g.out, "%-25s %-8v %s\n", c.Name, c.Running, pid)
			}
			if errors.Is(err, cluster.ErrNotRunning) {
				return exitError{3, err}
			}
			return err
		},
	})
	c.AddCommand(&cobra.Command{
		Use: "kubeconfig", Short: "Print the path of the local cluster's admin kubeconfig", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			lc, err := cluster.Open(opts())
			if err != nil {
				return err
			}
			fmt.Fprintln(g.out, lc.Kubeconfig)
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:    nodeAgentCommand + " run|pod-init [FLAGS]",
		Short:  "Run the local cluster's node agent (started by cluster up)",
		Hidden: true,
		// The agent parses its own flags.
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			if code := nodeagent.Main([]string{"cluster", nodeAgentCommand}, args); code != 0 {
				return exitError{code, fmt.Errorf("node agent exited with status %d", code)}
			}
			return nil
		},
	})
	return c
}

// nodeAgentCommand is the hidden "kuberpc cluster" subcommand that runs
// the node agent; cluster up starts this executable with it.
const nodeAgentCommand = "node-agent"

// clusterOptions are the local cluster options of every command.
func clusterOptions(g *globals) cluster.Options {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return cluster.Options{Progress: g.out, MergeKubeconfig: true, NodeAgent: []string{exe, "cluster", nodeAgentCommand},
		MetricsAdapter: []string{exe, metricsAdapterCommand}}
}
