package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/mod/modfile"

	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/scaffold"
	"github.com/kuberpc/kuberpc/examples/example"
)

func newCmd(g *globals) *cobra.Command {
	var protoFiles []string
	var module, lang, dir, src string
	c := &cobra.Command{
		Use:   "new NAME",
		Short: "Scaffold a service from a .proto: generated code, a server with a stub per method, a client, Dockerfile, kuberpc.yaml",
		Example: `  kuberpc new greeter --proto greeter.proto
  kuberpc new example            # the reference ExampleService`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(languages, lang) {
				return usagef("--lang %q: want one of %s", lang, strings.Join(languages, ", "))
			}
			o := scaffold.Options{Name: args[0], Dir: dir, Module: module, Protos: []scaffold.File{{Name: "example.proto", Content: example.Proto}}}
			if len(protoFiles) > 0 {
				o.Protos = nil
				for _, f := range protoFiles {
					b, err := os.ReadFile(f)
					if err != nil {
						return usageError{err}
					}
					o.Protos = append(o.Protos, scaffold.File{Name: filepath.Base(f), Content: b})
				}
			}
			if err := o.Validate(); err != nil {
				return usageError{err}
			}
			var err error
			if o.KuberpcSource, err = checkout(src); err != nil {
				return err
			}
			if lang == "go" && o.KuberpcSource == "" {
				if o.KuberpcVersion, err = libraryVersion(); err != nil {
					// A development build: it can only build against a checkout.
					if o.KuberpcSource = findCheckout("."); o.KuberpcSource == "" {
						return err
					}
					fmt.Fprintf(g.out, "development build of kuberpc: building against the checkout %s\n", o.KuberpcSource)
				}
			}
			fmt.Fprintf(g.out, "creating %s (%s) from %s ...\n", args[0], lang, o.ProtoNames())
			// What to create, the file whose handlers to write, and what
			// image build does beyond registering.
			create, handlers, builds := scaffold.New, "cmd/server/main.go", ""
			switch lang {
			case "python":
				create = func(ctx context.Context, o scaffold.Options) (string, error) {
					return scaffold.NewPython(ctx, o, scaffold.PythonRuntime())
				}
				handlers = "python/server.py"
			case "cpp":
				create = func(ctx context.Context, o scaffold.Options) (string, error) {
					return scaffold.NewCpp(ctx, o, scaffold.CppRuntime())
				}
				handlers, builds = "cpp/server.cc", "   # builds cpp/build and registers it"
			case "java":
				create = func(ctx context.Context, o scaffold.Options) (string, error) {
					return scaffold.NewJava(ctx, o, scaffold.JavaRuntime())
				}
				handlers, builds = "java/server/Server.java", "   # builds java/build and registers it"
			}
			path, err := create(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "created %s\nnext:\n  cd %s\n  # write the handlers in %s\n  kuberpc image build kuberpc.local/%s:v1%s\n  kuberpc deploy\n", path, path, handlers, args[0], builds)
			return nil
		},
	}
	c.Flags().StringArrayVar(&protoFiles, "proto", nil, "a .proto to scaffold from; repeat for protos that import each other (default: the reference ExampleService)")
	c.Flags().StringVar(&src, "kuberpc-src", "", "a kuberpc checkout to build against (a replace directive), for developing kuberpc itself (env KUBERPC_SRC)")
	c.Flags().StringVar(&module, "module", "", "Go module path (default: NAME)")
	c.Flags().StringVar(&lang, "lang", "go", "language of the server: "+strings.Join(languages, ", "))
	c.Flags().StringVar(&dir, "dir", ".", "where to create the service directory")
	return c
}

// languages are the values of --lang.
var languages = []string{"go", "python", "cpp", "java"}

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
				if err := scaffold.GenGo(cmd.Context(), ".", mod); err != nil {
					return err
				}
			case "python":
				if err := scaffold.GenPython(cmd.Context(), "."); err != nil {
					return err
				}
			case "cpp":
				if err := scaffold.GenCpp(cmd.Context(), "."); err != nil {
					return err
				}
			case "java":
				if err := scaffold.GenJava(cmd.Context(), "."); err != nil {
					return err
				}
			default:
				return usagef("--lang %q: want one of %s", lang, strings.Join(languages, ", "))
			}
			fmt.Fprintf(g.out, "generated %s code from proto/\n", strings.ToLower(lang))
			return nil
		},
	}
	c.Flags().StringVar(&lang, "lang", "go", "go, python, cpp (generates and builds into cpp/build) or java (into java/build)")
	return c
}
