// Command kube is a multi-call binary holding the Kubernetes control-plane
// components of the kuberpc local cluster: kube-apiserver,
// kube-controller-manager, kube-scheduler, kube-proxy and kubectl. The
// component is chosen by the name the binary is invoked as (symlinks), or by
// the first argument.
//
// It lives in its own module so that nothing kuberpc users import depends on
// k8s.io/kubernetes.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-proxy":              proxy.NewProxyCommand,
	"kubectl":                 cmd.NewDefaultKubectlCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	newCmd, ok := components[name]
	if !ok && len(os.Args) > 1 {
		if newCmd, ok = components[os.Args[1]]; ok {
			os.Args = os.Args[1:]
		}
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "kube: unknown component %q; want one of kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubectl\n", name)
		os.Exit(2)
	}
	c := newCmd()
	if len(os.Args) > 0 {
		c.SetArgs(os.Args[1:])
	}
	os.Exit(cli.Run(c))
}
