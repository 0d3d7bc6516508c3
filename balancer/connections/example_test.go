package connections_test

import (
	"fmt"

	"github.com/kuberpc/kuberpc/client"
)

// client.WithConnectionsPerEndpoint puts the policy around the chosen
// balancer (and inside outlier detection, when it is on).
func Example() {
	sc, err := client.ServiceConfig(client.WithConnectionsPerEndpoint(2), client.WithoutOutlierDetection())
	fmt.Println(sc, err)
	// Output:
	// {"loadBalancingConfig":[{"kuberpc_connections":{"childPolicy":[{"round_robin":{}}],"perEndpoint":2}}]} <nil>
}
