// Package e2e proves kuberpc's client against the local cluster's real
// apiserver, controllers and pods: the kubernetes resolver watching
// EndpointSlices, balancing across pods, scale-up and termination.
package e2e

import (
	"os"
	"testing"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
)

var env *clustertest.Env

func TestMain(m *testing.M) {
	os.Exit(clustertest.Run(m, "e2e", &env))
}
