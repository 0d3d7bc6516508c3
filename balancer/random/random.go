// Package random is a load-balancing policy that sends each RPC to an
// endpoint chosen uniformly at random among the READY ones. Importing it
// registers "random".
package random

import (
	"math/rand/v2"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"

	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
)

// Name is the policy's name in service configs.
const Name = "random"

// randIntN is a package variable so that tests can stub it.
var randIntN = rand.IntN

func init() {
	balancer.Register(endpointbalancer.NewBuilder(endpointbalancer.Policy{
		Name:             Name,
		NewPickerBuilder: func(serviceconfig.LoadBalancingConfig) endpointbalancer.PickerBuilder { return pickerBuilder{} },
	}))
}

type pickerBuilder struct{}

func (pickerBuilder) Build(ready []endpointbalancer.Endpoint) balancer.Picker {
	pickers := make([]balancer.Picker, len(ready))
	for i, e := range ready {
		pickers[i] = e.Picker
	}
	return picker(pickers)
}

type picker []balancer.Picker

func (p picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	return p[randIntN(len(p))].Pick(info)
}
