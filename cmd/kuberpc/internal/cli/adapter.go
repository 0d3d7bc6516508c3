package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kuberpc/kuberpc/metricsadapter"
)

// metricsAdapterCommand runs kuberpc's custom metrics adapter: on a real
// cluster as a Deployment (the CLI is its image; see `kuberpc manifests
// --adapter`), in the local cluster as a process cluster up starts.
const metricsAdapterCommand = "metrics-adapter"

func metricsAdapterCmd() *cobra.Command {
	return &cobra.Command{
		Use:   metricsAdapterCommand + " [FLAGS]",
		Short: "Serve custom.metrics.k8s.io: kuberpc servers' request rate, in-flight calls and error ratio, for HPAs",
		Long: `Serve custom.metrics.k8s.io through the apiserver's aggregation layer: every
kuberpc server's request rate, in-flight calls and error ratio per pod, scraped
from its "metrics" port and averaged over --window, for HorizontalPodAutoscalers
(metrics ` + fmt.Sprint(metricsadapter.Metrics) + `). Flags are those of
sigs.k8s.io/custom-metrics-apiserver (--secure-port, --tls-cert-file,
--lister-kubeconfig, ...) and --window, --interval.`,
		DisableFlagParsing: true, // the adapter parses its own
		RunE: func(_ *cobra.Command, args []string) error {
			if code := metricsadapter.Main(args); code != 0 {
				return exitError{code, fmt.Errorf("metrics adapter exited with status %d", code)}
			}
			return nil
		},
	}
}
