package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kuberpc/kuberpc/manifests"
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
	var file, output string
	c := &cobra.Command{
		Use: "manifests", Short: "Print the Kubernetes objects for kuberpc.yaml", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			app, err := g.loadApp(file)
			if err != nil {
				return err
			}
			out, err := render(manifests.Objects(app), output)
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
	return c
}
