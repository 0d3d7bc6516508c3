// Command kuberpc-cluster manages the kuberpc local cluster without the
// kuberpc CLI: up, down [--purge], status, kubeconfig. The kuberpc CLI's
// `kuberpc cluster` offers the same commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kuberpc/kuberpc/localcluster/cluster"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kuberpc-cluster up|down [--purge]|status|kubeconfig")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := cluster.Options{Progress: os.Stdout}
	var err error
	switch os.Args[1] {
	case "up":
		var c *cluster.Cluster
		if c, err = cluster.Up(ctx, opts); err == nil {
			fmt.Printf("cluster ready; kubeconfig: %s\nkubectl: %s\n", c.Kubeconfig, c.Bin.Path("kubectl"))
		}
	case "down":
		fs := flag.NewFlagSet("down", flag.ExitOnError)
		purge := fs.Bool("purge", false, "also delete the state directory")
		fs.Parse(os.Args[2:])
		err = cluster.Down(opts, *purge)
	case "status":
		var comps []cluster.Component
		comps, err = cluster.Status(opts)
		for _, c := range comps {
			fmt.Printf("%-25s running=%v pid=%d\n", c.Name, c.Running, c.PID)
		}
		if errors.Is(err, cluster.ErrNotRunning) {
			fmt.Println("cluster is down")
			err = nil
			os.Exit(3)
		}
	case "kubeconfig":
		var c *cluster.Cluster
		if c, err = cluster.Open(opts); err == nil {
			fmt.Println(c.Kubeconfig)
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kuberpc-cluster:", err)
		os.Exit(1)
	}
}
