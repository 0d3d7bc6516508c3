package outlierdetection_test

import (
	"fmt"
	"time"

	"github.com/kuberpc/kuberpc/client"
)

// client.Dial puts the policy around every balancer by default; its
// settings come from client.WithOutlierDetection.
func Example() {
	od := client.DefaultOutlierDetection
	od.ConsecutiveFailures = 3
	od.BaseEjectionTime = 10 * time.Second
	sc, err := client.ServiceConfig(client.WithBalancer("p2c_ewma", ""), client.WithOutlierDetection(od))
	fmt.Println(sc, err)
	// Output:
	// {"loadBalancingConfig":[{"kuberpc_outlier_detection":{"baseEjectionTime":"10s","childPolicy":[{"p2c_ewma":{}}],"consecutiveFailures":3,"failurePercentage":{"minimumHosts":3,"requestVolume":20,"threshold":50},"interval":"1s","maxEjectionPercent":50,"maxEjectionTime":"1m0s"}}]} <nil>
}
