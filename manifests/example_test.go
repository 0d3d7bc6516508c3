package manifests_test

import (
	"fmt"

	"github.com/kuberpc/kuberpc/manifests"
)

// Parse decodes kuberpc.yaml strictly and fills the defaults; Objects
// renders what deploy applies.
func Example() {
	app, err := manifests.Parse([]byte("name: greeter\nimage: kuberpc.local/greeter:v1\ndrain: {propagationDelay: 3s, timeout: 10s}\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, o := range manifests.Objects(app) {
		fmt.Println(o.GetObjectKind().GroupVersionKind().Kind, o.GetName())
	}
	fmt.Println("terminationGracePeriod:", manifests.TerminationGracePeriod(app))
	// Output:
	// ServiceAccount greeter
	// ServiceAccount greeter-client
	// Role greeter-endpoints-reader
	// RoleBinding greeter-endpoints-reader
	// Service greeter
	// Service greeter-headless
	// Deployment greeter
	// PodDisruptionBudget greeter
	// NetworkPolicy greeter
	// terminationGracePeriod: 18s
}

// Errors name the field.
func ExampleParse() {
	_, err := manifests.Parse([]byte("name: greeter\nimage: x\nports: {grpc: 0}\n"))
	fmt.Println(err)
	// Output:
	// ports.grpc: 0 out of range 1-65535
}
