// Package leastrequest registers "least_request": grpc-go's
// least-request policy (power of two choices on outstanding RPCs,
// registered by grpc-go as "least_request_experimental") under the stable
// name kuberpc's service configs use. Configuration is grpc-go's:
// {"choiceCount": 2}.
package leastrequest

import (
	"encoding/json"

	"google.golang.org/grpc/balancer"
	grpclr "google.golang.org/grpc/balancer/leastrequest"
	"google.golang.org/grpc/serviceconfig"
)

// Name is the policy's name in service configs.
const Name = "least_request"

func init() {
	balancer.Register(renamed{balancer.Get(grpclr.Name)})
}

// renamed is grpc-go's builder under another name.
type renamed struct{ balancer.Builder }

func (renamed) Name() string { return Name }

// ParseConfig delegates to grpc-go's parser.
func (r renamed) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	return r.Builder.(balancer.ConfigParser).ParseConfig(js)
}
