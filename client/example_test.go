package client_test

import (
	"fmt"

	"github.com/kuberpc/kuberpc/client"
)

// The service config Dial builds for round_robin (wrapped, by default,
// in outlier detection) and one idempotent method.
func ExampleServiceConfig() {
	sc, err := client.ServiceConfig(client.WithIdempotentMethods("example.ExampleService/SayHello"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sc)
	// Output:
	// {"loadBalancingConfig":[{"kuberpc_outlier_detection":{"baseEjectionTime":"5s","childPolicy":[{"round_robin":{}}],"consecutiveFailures":5,"failurePercentage":{"minimumHosts":3,"requestVolume":20,"threshold":50},"interval":"1s","maxEjectionPercent":50,"maxEjectionTime":"1m0s"}}],"methodConfig":[{"name":[{"service":"example.ExampleService","method":"SayHello"}],"retryPolicy":{"maxAttempts":4,"initialBackoff":"0.05s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}],"retryThrottling":{"maxTokens":100,"tokenRatio":0.1}}
}
