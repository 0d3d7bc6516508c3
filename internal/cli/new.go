package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/mod/modfile"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/scaffold"
	"github.com/kuberpc/kuberpc/localcluster/binaries"
)

func newCmd(g *globals) *cobra.Command {
	var protoFile, module, lang, dir string
	c := &cobra.Command{
		Use:   "new NAME",
		Short: "Scaffold a service from a .proto: generated code, a server with a stub per method, a client, Dockerfile, kuberpc.yaml",
		Example: `  kuberpc new greeter --proto greeter.proto
  kuberpc new example            # the reference ExampleService`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if lang != "go" && lang != "python" {
				return usagef("--lang %q: want go or python", lang)
			}
			o := scaffold.Options{Name: args[0], Dir: dir, Module: module, Proto: example.Proto, ProtoName: "example.proto"}
			if protoFile != "" {
				b, err := os.ReadFile(protoFile)
				if err != nil {
					return usageError{err}
				}
				o.Proto, o.ProtoName = b, filepath.Base(protoFile)
			}
			if src, err := binaries.FindSource("."); err == nil {
				o.KuberpcSource = src
			}
			fmt.Fprintf(g.out, "creating %s (%s) from %s ...\n", args[0], lang, o.ProtoName)
			if lang == "python" {
				path, err := scaffold.NewPython(cmd.Context(), o, example.HealthProto)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.out, "created %s\nnext:\n  cd %s\n  # write the handlers in python/server.py\n  kuberpc image load kuberpc.local/%s:v1 /usr/bin/python3 python/server.py\n  kuberpc deploy\n", path, path, args[0])
				return nil
			}
			path, err := scaffold.New(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "created %s\nnext:\n  cd %s\n  # write the handlers in cmd/server/main.go\n  kuberpc image build kuberpc.local/%s:v1\n  kuberpc deploy\n", path, path, args[0])
			return nil
		},
	}
	c.Flags().StringVar(&protoFile, "proto", "", "the .proto to scaffold from (default: the reference ExampleService)")
	c.Flags().StringVar(&module, "module", "", "Go module path (default: NAME)")
	c.Flags().StringVar(&lang, "lang", "go", "language of the server")
	c.Flags().StringVar(&dir, "dir", ".", "where to create the service directory")
	return c
}

func genCmd(g *globals) *cobra.Command {
	var lang string
	c := &cobra.Command{
		Use:   "gen",
		Short: "Regenerate code from proto/*.proto with protoc and the pinned plugins (run in the service's module)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch lang {
			case "go":
				b, err := os.ReadFile("go.mod")
				if err != nil {
					return usagef("no go.mod here: run kuberpc gen in the service's module directory")
				}
				mod := modfile.ModulePath(b)
				if mod == "" {
					return usagef("go.mod has no module line")
				}
				if err := scaffold.GenGo(cmd.Context(), ".", mod, ""); err != nil {
					return err
				}
			case "python":
				if err := scaffold.GenPython(cmd.Context(), "."); err != nil {
					return err
				}
			default:
				return usagef("--lang %q: want go or python", lang)
			}
			fmt.Fprintf(g.out, "generated %s code from proto/\n", strings.ToLower(lang))
			return nil
		},
	}
	c.Flags().StringVar(&lang, "lang", "go", "go or python")
	return c
}
