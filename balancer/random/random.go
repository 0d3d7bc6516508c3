// Package random is a load-balancing policy that sends each RPC to an
// endpoint chosen uniformly at random among the READY ones. Importing it
// registers "random".
package random

import (
	"math/rand/v2"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"

	"github.com/kuberpc/kuberpc/internal/attempts"
	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
)

// Name is the policy's name in service configs.
const Name = "random"

// randIntN is a package variable so that tests can stub it.
var randIntN = rand.IntN

func init() {
	attempts.Honour(Name)
	balancer.Register(endpointbalancer.NewBuilder(endpointbalancer.Policy{
		Name:             Name,
		NewPickerBuilder: func(serviceconfig.LoadBalancingConfig) endpointbalancer.PickerBuilder { return pickerBuilder{} },
	}))
}

type pickerBuilder struct{}

func (pickerBuilder) Build(ready []endpointbalancer.Endpoint) balancer.Picker {
	eps := make([]endpoint, len(ready))
	for i, e := range ready {
		eps[i] = endpoint{key: e.Key, picker: e.Picker}
	}
	return picker(eps)
}

type endpoint struct {
	key    string
	picker balancer.Picker
}

func endpointKey(e *endpoint) string { return e.key }

type picker []endpoint

func (p picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	// A retry or a hedge is drawn from the endpoints its call has not
	// tried (see package attempts).
	tried := attempts.FromContext(info.Ctx)
	eps := attempts.Untried(tried, p, endpointKey)
	e := &eps[randIntN(len(eps))]
	res, err := e.picker.Pick(info)
	if err == nil && tried != nil {
		tried.Add(e.key)
	}
	return res, err
}
