package metricsadapter

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
)

// Main runs the adapter with command-line args (the custom-metrics-apiserver
// flags: --secure-port, --tls-cert-file, --lister-kubeconfig, ...; and
// --window, --interval) until SIGTERM or SIGINT. It returns the exit code.
func Main(args []string) int {
	cmd := &basecmd.AdapterBase{Name: "kuberpc-metrics-adapter", FlagSet: pflag.NewFlagSet("kuberpc-metrics-adapter", pflag.ContinueOnError)}
	window := cmd.Flags().Duration("window", 30*time.Second, "the window rates and averages are computed over")
	interval := cmd.Flags().Duration("interval", 5*time.Second, "time between scrapes of each pod")
	if err := cmd.Flags().Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, "kuberpc metrics adapter:", err)
		return 2
	}
	if *window <= 0 || *interval <= 0 || *interval >= *window {
		fmt.Fprintf(os.Stderr, "kuberpc metrics adapter: --interval=%v and --window=%v: want 0 < interval < window\n", *interval, *window)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, err := cmd.ClientConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kuberpc metrics adapter:", err)
		return 1
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kuberpc metrics adapter:", err)
		return 1
	}
	factory := informers.NewSharedInformerFactory(cs, 10*time.Minute)
	pods := factory.Core().V1().Pods()
	p := NewProvider(pods.Lister(), *window, *interval)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	go p.Run(ctx)
	cmd.WithCustomMetrics(p)
	if err := cmd.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "kuberpc metrics adapter:", err)
		return 1
	}
	return 0
}
