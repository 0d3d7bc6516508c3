package client_test

import (
	"fmt"

	"github.com/kuberpc/kuberpc/client"
)

// The service config Dial builds for round_robin and one idempotent
// method.
func ExampleServiceConfig() {
	sc, err := client.ServiceConfig(client.WithIdempotentMethods("example.ExampleService/SayHello"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sc)
	// Output:
	// {"loadBalancingConfig":[{"round_robin":{}}],"methodConfig":[{"name":[{"service":"example.ExampleService","method":"SayHello"}],"retryPolicy":{"maxAttempts":4,"initialBackoff":"0.05s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}],"retryThrottling":{"maxTokens":10,"tokenRatio":0.1}}
}
