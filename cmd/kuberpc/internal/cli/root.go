// Package cli implements the kuberpc command.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kuberpc/kuberpc/localcluster/cluster"
)

// exitError carries an exit code for errors that are not the user's.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// globals are the kubectl-style flags every command shares.
type globals struct {
	kubeconfig, context, namespace string
	out, errOut                    io.Writer
}

// Main runs kuberpc with args and returns the exit code: 0 on success, 1
// on an error, 2 on bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	g := &globals{out: stdout, errOut: stderr}
	root := &cobra.Command{
		Use:           "kuberpc",
		Short:         "gRPC services as first-class Kubernetes citizens",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the local cluster's)")
	root.PersistentFlags().StringVar(&g.context, "context", "", "kubeconfig context")
	root.PersistentFlags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default: kuberpc.yaml's, or the context's)")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(clusterCmd(g), imageCmd(g), manifestsCmd(g), deployCmd(g), statusCmd(g), rollbackCmd(g), deleteCmd(g), callCmd(g), newCmd(g), genCmd(g), demoCmd(g), versionCmd(g), loadCmd(g), metricsAdapterCmd())
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "kuberpc:", err)
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isUsage(err) {
		return 2
	}
	return 1
}

// usageError marks errors in how kuberpc was called.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func isUsage(err error) bool {
	var u usageError
	if errors.As(err, &u) {
		return true
	}
	// cobra's own flag and argument errors
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand", "unknown command", "accepts ", "requires ", "invalid argument", "flag needs an argument", "if any flags in the group"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// restConfig loads the kubeconfig: --kubeconfig, then KUBECONFIG or
// ~/.kube/config, then the local cluster's admin kubeconfig. The
// namespace is -n, else the context's.
func (g *globals) restConfig() (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = g.kubeconfigPath()
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: g.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w (is the cluster up? `kuberpc cluster up`)", err)
	}
	ns, _, _ := cc.Namespace()
	if g.namespace != "" {
		ns = g.namespace
	}
	return cfg, ns, nil
}

// kubeconfigPath is the kubeconfig file to load: --kubeconfig; else, in a
// pod (KUBERNETES_SERVICE_HOST set), "" so that client-go uses the pod's
// service account; else, when neither KUBECONFIG nor ~/.kube/config
// exists, the local cluster's admin kubeconfig; else "" (client-go's
// default rules).
func (g *globals) kubeconfigPath() string {
	if g.kubeconfig != "" {
		return g.kubeconfig
	}
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBECONFIG") == "" {
		return ""
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if _, err := os.Stat(rules.GetDefaultFilename()); err != nil && os.Getenv("KUBECONFIG") == "" {
		if c, err := cluster.Open(cluster.Options{}); err == nil {
			return c.Kubeconfig
		}
	}
	return ""
}

func (g *globals) clients() (kubernetes.Interface, dynamic.Interface, string, error) {
	cfg, ns, err := g.restConfig()
	if err != nil {
		return nil, nil, "", err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, "", err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, "", err
	}
	return cs, dyn, ns, nil
}
