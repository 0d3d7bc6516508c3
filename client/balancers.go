package client

// The policies WithBalancer can name. round_robin and pick_first are
// grpc-go's defaults; these add grpc-go's weighted_round_robin (fed by the
// servers' ORCA reports) and kuberpc's random, p2c_ewma and least_request.
import (
	_ "google.golang.org/grpc/balancer/weightedroundrobin" // "weighted_round_robin"

	_ "github.com/kuberpc/kuberpc/balancer/leastrequest" // "least_request"
	_ "github.com/kuberpc/kuberpc/balancer/p2cewma"      // "p2c_ewma"
	_ "github.com/kuberpc/kuberpc/balancer/random"       // "random"
)
