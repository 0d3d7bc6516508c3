package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/spf13/cobra"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
)

// libraryModule is the module path of the kuberpc library.
const libraryModule = "github.com/kuberpc/kuberpc"

// buildVersions are the versions this binary was built from: the CLI's own
// module and the kuberpc library it links. A binary built in the checkout
// reports "(devel)" for its own module and, through go.work, the version
// the checkout is about to release for the library.
func buildVersions() (cli, lib string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)", ""
	}
	cli = bi.Main.Version
	for _, d := range bi.Deps {
		if d.Path == libraryModule {
			lib = d.Version
		}
	}
	return cli, lib
}

// libraryVersion is the kuberpc library version that services scaffolded
// by this binary require: the one it was built with.
func libraryVersion() (string, error) {
	_, lib := buildVersions()
	if !semver.IsValid(lib) {
		return "", fmt.Errorf("this kuberpc binary does not know which kuberpc library version it was built with (%q); install a release (go install github.com/kuberpc/kuberpc/cmd/kuberpc@latest) or pass --kuberpc-src", lib)
	}
	return lib, nil
}

// checkout returns the kuberpc source tree to build from: dir when set
// (--kuberpc-src or $KUBERPC_SRC), else "" (use published modules). It
// checks that dir holds the library module.
func checkout(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("KUBERPC_SRC")
	}
	if dir == "" {
		return "", nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if !isCheckout(abs) {
		return "", usagef("--kuberpc-src %s: not a kuberpc checkout (no go.mod of module %s there)", dir, libraryModule)
	}
	return abs, nil
}

// findCheckout returns the kuberpc checkout at or above dir, or "".
func findCheckout(dir string) string {
	d, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	for !isCheckout(d) {
		parent := filepath.Dir(d)
		if parent == d {
			return ""
		}
		d = parent
	}
	return d
}

// isCheckout reports whether dir holds the library module's go.mod.
func isCheckout(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	return err == nil && modfile.ModulePath(b) == libraryModule
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "Print the versions of the kuberpc CLI and of the library it scaffolds with", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cli, lib := buildVersions()
			fmt.Fprintf(g.out, "kuberpc CLI %s, library %s\n", cli, lib)
			return nil
		},
	}
}
