package random_test

import (
	"fmt"

	_ "github.com/kuberpc/kuberpc/balancer/random"
	"github.com/kuberpc/kuberpc/client"
)

// The policy is chosen by name in the service config that client.Dial
// builds.
func Example() {
	sc, err := client.ServiceConfig(client.WithBalancer("random", ""), client.WithoutOutlierDetection())
	fmt.Println(sc, err)
	// Output:
	// {"loadBalancingConfig":[{"random":{}}]} <nil>
}
