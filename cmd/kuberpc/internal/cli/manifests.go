package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kuberpc/kuberpc/manifests"
	"github.com/kuberpc/kuberpc/metricsadapter"
)

// loadApp reads kuberpc.yaml and applies -n.
func (g *globals) loadApp(file string) (manifests.App, error) {
	app, err := manifests.Load(file)
	if err != nil {
		return app, usageError{err}
	}
	if g.namespace != "" {
		app.Namespace = g.namespace
		if err := app.Validate(); err != nil {
			return app, usageError{err}
		}
	}
	return app, nil
}

func render(objs []manifests.Object, format string) ([]byte, error) {
	switch format {
	case "yaml", "":
		return manifests.YAML(objs)
	case "json":
		return json.MarshalIndent(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs}, "", "  ")
	}
	return nil, usagef("-o %q: want yaml or json", format)
}

func manifestsCmd(g *globals) *cobra.Command {
	var file, output, adapterImage string
	c := &cobra.Command{
		Use: "manifests", Short: "Print the Kubernetes objects for kuberpc.yaml (or, with --metrics-adapter-image, for the cluster's metrics adapter)", Args: cobra.NoArgs,
		Example: `  kuberpc manifests -f kuberpc.yaml
  kuberpc manifests --metrics-adapter-image registry.example.com/kuberpc:v0.2.0 -n kube-system | kubectl apply -f -`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var objs []manifests.Object
			if cmd.Flags().Changed("metrics-adapter-image") {
				if adapterImage == "" {
					return usagef("--metrics-adapter-image: want the image of the kuberpc CLI, which runs the adapter")
				}
				ns := g.namespace
				if ns == "" {
					ns = "kube-system"
				}
				objs = metricsadapter.Manifests(ns, adapterImage)
			} else {
				app, err := g.loadApp(file)
				if err != nil {
					return err
				}
				objs = manifests.Objects(app)
			}
			out, err := render(objs, output)
			if err != nil {
				return err
			}
			fmt.Fprint(g.out, string(out))
			if output == "json" {
				fmt.Fprintln(g.out)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "filename", "f", "kuberpc.yaml", "the app description")
	c.Flags().StringVarP(&output, "output", "o", "yaml", "yaml or json")
	c.Flags().StringVar(&adapterImage, "metrics-adapter-image", "", "print the custom metrics adapter's objects (one per cluster, namespace -n or kube-system), running this image of the kuberpc CLI")
	return c
}
