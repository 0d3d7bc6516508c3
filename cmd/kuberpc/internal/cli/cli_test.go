package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/cli"
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
			// kuberpc new points new modules at this checkout.
			wd, err := os.Getwd()
			if err != nil {
				return err
			}
			e.Setenv("KUBERPC_SRC", filepath.Join(wd, "..", "..", "..", ".."))
			// The go command needs its caches and the module proxy.
			for _, k := range []string{"GOPATH", "GOMODCACHE", "GOCACHE", "GOPROXY", "GOFLAGS", "PATH"} {
				if v := os.Getenv(k); v != "" {
					e.Setenv(k, v)
				}
			}
			if os.Getenv("GOCACHE") == "" {
				out, _ := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
				vals := strings.Fields(string(out))
				if len(vals) == 3 {
					e.Setenv("GOCACHE", vals[0])
					e.Setenv("GOMODCACHE", vals[1])
					e.Setenv("GOPATH", vals[2])
				}
			}
			return nil
		},
	})
}
