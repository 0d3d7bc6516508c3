// Package e2e proves the local cluster against its real parts: the
// apiserver, controllers, scheduler and the node agent. The cluster is
// started once for the package (see clustertest); every test works in a
// namespace of its own.
package e2e

import (
	"os"
	"testing"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
)

var env *clustertest.Env

func TestMain(m *testing.M) {
	os.Exit(clustertest.Run(m, "localcluster/e2e", &env))
}
