// Package childpolicy parses the "childPolicy" list of a load-balancing
// policy that wraps another, as grpc-go's own wrapping policies do: the
// first policy of the list that is registered is the child.
package childpolicy

import (
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// Parse returns the first registered policy of list, with its parsed
// configuration (nil when the policy takes none). Each entry of list
// names one policy, as in gRPC's loadBalancingConfig. The error names every
// policy of the list that is not registered when none is, and the
// child's configuration error.
func Parse(list []map[string]json.RawMessage) (name string, cfg serviceconfig.LoadBalancingConfig, err error) {
	if len(list) == 0 {
		return "", nil, fmt.Errorf(`childPolicy: missing (want a list such as [{"round_robin": {}}])`)
	}
	var unknown []string
	for i, m := range list {
		if len(m) != 1 {
			return "", nil, fmt.Errorf("childPolicy[%d]: %d policies in one entry, want one (a list of {name: config})", i, len(m))
		}
		for n, js := range m {
			b := balancer.Get(n)
			if b == nil {
				unknown = append(unknown, n)
			}
			if b == nil || name != "" {
				continue
			}
			name = n
			if p, ok := b.(balancer.ConfigParser); ok {
				if cfg, err = p.ParseConfig(js); err != nil {
					err = fmt.Errorf("childPolicy %s: %w", n, err)
				}
			}
		}
	}
	if name == "" {
		return "", nil, fmt.Errorf("childPolicy: no registered load-balancing policy among %q (is its package imported?)", unknown)
	}
	return name, cfg, err
}

// Child is the child balancer of a wrapping policy. Embedded in the
// wrapping policy's balancer, it passes the channel's calls on to the
// child: ResolverError, UpdateSubConnState, ExitIdle and Close.
type Child struct {
	// CC is the channel, which is told of a resolver error that comes
	// before there is a child.
	CC   balancer.ClientConn
	Opts balancer.BuildOptions

	b    balancer.Balancer
	name string
}

// Update gives the child named name the resolver state s and its
// configuration cfg, building it first on cc (the wrapping policy's
// ClientConn for its child) when there is none or it has another name.
func (c *Child) Update(name string, cc balancer.ClientConn, s resolver.State, cfg serviceconfig.LoadBalancingConfig) error {
	if c.b == nil || c.name != name {
		if c.b != nil {
			c.b.Close()
		}
		c.b, c.name = balancer.Get(name).Build(cc, c.Opts), name
	}
	return c.b.UpdateClientConnState(balancer.ClientConnState{ResolverState: s, BalancerConfig: cfg})
}

// ResolverError passes err to the child; before there is one (no
// configuration yet) the channel is told it cannot connect.
func (c *Child) ResolverError(err error) {
	if c.b == nil {
		c.CC.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure, Picker: base.NewErrPicker(err)})
		return
	}
	c.b.ResolverError(err)
}

// UpdateSubConnState passes the deprecated call on.
func (c *Child) UpdateSubConnState(sc balancer.SubConn, s balancer.SubConnState) {
	if c.b != nil {
		c.b.UpdateSubConnState(sc, s)
	}
}

// ExitIdle passes the call on to a child that can exit idle.
func (c *Child) ExitIdle() {
	if ei, ok := c.b.(balancer.ExitIdler); ok {
		ei.ExitIdle()
	}
}

// Close closes the child.
func (c *Child) Close() {
	if c.b != nil {
		c.b.Close()
	}
}
