package kubernetes_test

import (
	"fmt"

	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// Importing the package registers the scheme; a client then dials
// kubernetes:///name.namespace:port (see client.Dial). ParseTarget shows
// how a target is read.
func ExampleParseTarget() {
	for _, target := range []string{"example.default:grpc", "example:50051", "example.shop.svc.cluster.local:grpc"} {
		t, err := kuberesolver.ParseTarget(target)
		fmt.Printf("service=%s namespace=%q port=%s|%d err=%v\n", t.Service, t.Namespace, t.PortName, t.Port, err)
	}
	// Output:
	// service=example namespace="default" port=grpc|0 err=<nil>
	// service=example namespace="" port=|50051 err=<nil>
	// service=example namespace="shop" port=grpc|0 err=<nil>
}
