// Package e2e proves kuberpc's client against the local cluster's real
// apiserver, controllers and pods: the kubernetes resolver watching
// EndpointSlices, balancing across pods, scale-up and termination.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
)

var env *clustertest.Env

// cliBinary is the kuberpc CLI built for the tests: they run it as a user
// does, as a separate process.
var cliBinary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if !clustertest.IsNodeAgent() {
		dir, err := os.MkdirTemp("", "kuberpc-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cliBinary = filepath.Join(dir, "kuberpc")
		build := exec.Command("go", "build", "-o", cliBinary, "github.com/kuberpc/kuberpc/cmd/kuberpc")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build the kuberpc CLI: %v\n%s", err, out)
			return 1
		}
	}
	return clustertest.Run(m, "e2e", &env)
}
