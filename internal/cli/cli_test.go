package cli_test

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kuberpc/kuberpc/internal/cli"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"kuberpc": func() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the golden CLI scripts in testdata/script: each is a
// txtar archive of files and commands whose output is compared.
// UPDATE_GOLDEN=1 rewrites the expected output in place.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/script",
		UpdateScripts: os.Getenv("UPDATE_GOLDEN") == "1",
		Setup: func(e *testscript.Env) error {
			// No cluster, no user kubeconfig: commands that need one must
			// say so, not reach a real cluster.
			e.Setenv("HOME", e.WorkDir)
			e.Setenv("KUBERPC_HOME", e.WorkDir+"/.kuberpc")
			e.Setenv("KUBECONFIG", e.WorkDir+"/no-such-kubeconfig")
			return nil
		},
	})
}
