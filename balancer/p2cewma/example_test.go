package p2cewma_test

import (
	"fmt"

	_ "github.com/kuberpc/kuberpc/balancer/p2cewma"
	"github.com/kuberpc/kuberpc/client"
)

// The policy is chosen by name in the service config that client.Dial
// builds.
func Example() {
	sc, err := client.ServiceConfig(client.WithBalancer("p2c_ewma", ""), client.WithoutOutlierDetection())
	fmt.Println(sc, err)
	// Output:
	// {"loadBalancingConfig":[{"p2c_ewma":{}}]} <nil>
}
