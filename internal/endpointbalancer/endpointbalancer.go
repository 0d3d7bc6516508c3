// Package endpointbalancer builds per-request load balancers the way
// grpc-go's own are built: endpointsharding runs one pick_first child per
// endpoint (connection management, health, reconnection), and the policy
// only supplies a picker over the endpoints that are READY. A policy is a
// PickerBuilder and nothing else.
package endpointbalancer

import (
	"encoding/json"
	"fmt"
	"reflect"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"
)

// Endpoint is a READY endpoint and its child picker.
type Endpoint struct {
	// Key identifies the endpoint across picker rebuilds: its first address.
	Key      string
	Endpoint resolver.Endpoint
	Picker   balancer.Picker
}

// PickerBuilder builds the policy's picker from the READY endpoints. Build
// is called from one goroutine at a time; a PickerBuilder may keep state
// across calls (per-endpoint statistics), keyed by Endpoint.Key.
type PickerBuilder interface {
	Build(ready []Endpoint) balancer.Picker
}

// ConfigUpdater is implemented by PickerBuilders that take a new
// configuration in place, keeping their state. For the others a config
// update replaces the PickerBuilder.
type ConfigUpdater interface {
	UpdateConfig(cfg serviceconfig.LoadBalancingConfig)
}

// Config is a policy's parsed configuration.
type Config interface {
	serviceconfig.LoadBalancingConfig
}

// Policy describes a balancer to register.
type Policy struct {
	Name string
	// ParseConfig parses the policy's JSON config; nil accepts only {}.
	ParseConfig func(json.RawMessage) (serviceconfig.LoadBalancingConfig, error)
	// NewPickerBuilder returns the picker builder of one balancer instance
	// (one ClientConn), with its config (nil without ParseConfig).
	NewPickerBuilder func(cfg serviceconfig.LoadBalancingConfig) PickerBuilder
}

// NewBuilder returns a balancer.Builder for p.
func NewBuilder(p Policy) balancer.Builder { return builder{p} }

type builder struct{ p Policy }

type emptyConfig struct {
	serviceconfig.LoadBalancingConfig
}

func (b builder) Name() string { return b.p.Name }

func (b builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	if b.p.ParseConfig != nil {
		return b.p.ParseConfig(js)
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, fmt.Errorf("%s: config: %w", b.p.Name, err)
	}
	if len(m) > 0 {
		return nil, fmt.Errorf("%s: takes no configuration, got %s", b.p.Name, js)
	}
	return emptyConfig{}, nil
}

func (b builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	bal := &endpointBalancer{ClientConn: cc, policy: b.p}
	bal.child = endpointsharding.NewBalancer(bal, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return bal
}

// endpointBalancer sits between endpointsharding (whose ClientConn it is)
// and the channel, replacing the child's round-robin picker by the
// policy's.
type endpointBalancer struct {
	balancer.ClientConn // the channel
	child               balancer.Balancer
	policy              Policy
	pb                  PickerBuilder
	cfg                 serviceconfig.LoadBalancingConfig // the one pb has
}

func (b *endpointBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	var cfg serviceconfig.LoadBalancingConfig
	if _, ok := s.BalancerConfig.(emptyConfig); !ok {
		cfg = s.BalancerConfig
	}
	switch u, ok := b.pb.(ConfigUpdater); {
	case b.pb == nil:
		b.pb = b.policy.NewPickerBuilder(cfg)
	case sameConfig(cfg, b.cfg):
	case ok:
		u.UpdateConfig(cfg)
	default:
		b.pb = b.policy.NewPickerBuilder(cfg)
	}
	b.cfg = cfg
	return b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

func (b *endpointBalancer) ResolverError(err error) { b.child.ResolverError(err) }

func (b *endpointBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *endpointBalancer) ExitIdle() { b.child.ExitIdle() }

func (b *endpointBalancer) Close() { b.child.Close() }

// UpdateState receives endpointsharding's aggregate state.
func (b *endpointBalancer) UpdateState(s balancer.State) {
	var ready []Endpoint
	for _, c := range endpointsharding.ChildStatesFromPicker(s.Picker) {
		if c.State.ConnectivityState == connectivity.Ready {
			key := ""
			if len(c.Endpoint.Addresses) > 0 {
				key = c.Endpoint.Addresses[0].Addr
			}
			ready = append(ready, Endpoint{Key: key, Endpoint: c.Endpoint, Picker: c.State.Picker})
		}
	}
	if len(ready) == 0 || b.pb == nil {
		b.ClientConn.UpdateState(s)
		return
	}
	b.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: b.pb.Build(ready)})
}

// sameConfig reports whether a and b are the same configuration value
// (grpc-go passes the parsed config again with every resolver update).
func sameConfig(a, b serviceconfig.LoadBalancingConfig) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return reflect.TypeOf(a) == reflect.TypeOf(b) && reflect.TypeOf(a).Comparable() && a == b
}

// ReplicaFailed reports whether a call's error says the replica is in
// trouble (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, DATA_LOSS),
// as opposed to a call the client got wrong or gave up on. Policies that
// learn from outcomes (p2c_ewma's penalty, outlier detection) share it.
func ReplicaFailed(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	}
	return false
}
