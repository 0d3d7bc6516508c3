package endpointbalancer

import (
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"
)

type stubChild struct{ balancer.Balancer }

func (stubChild) UpdateClientConnState(balancer.ClientConnState) error { return nil }

type cfg struct {
	serviceconfig.LoadBalancingConfig
	v int
}

type recorder struct {
	updates []serviceconfig.LoadBalancingConfig
}

func (r *recorder) Build([]Endpoint) balancer.Picker { return nil }

func (r *recorder) UpdateConfig(c serviceconfig.LoadBalancingConfig) {
	r.updates = append(r.updates, c)
}

type plain struct {
	cfg serviceconfig.LoadBalancingConfig
}

func (plain) Build([]Endpoint) balancer.Picker { return nil }

// TestConfigUpdatesTakeEffect: a new config reaches a ConfigUpdater in
// place, and replaces a PickerBuilder that is not one; the same config
// again changes nothing.
func TestConfigUpdatesTakeEffect(t *testing.T) {
	rec := &recorder{}
	built := 0
	b := &endpointBalancer{child: stubChild{}, policy: Policy{NewPickerBuilder: func(serviceconfig.LoadBalancingConfig) PickerBuilder { built++; return rec }}}
	c1, c2 := &cfg{v: 1}, &cfg{v: 2}
	for _, c := range []serviceconfig.LoadBalancingConfig{c1, c1, c2} {
		if err := b.UpdateClientConnState(balancer.ClientConnState{BalancerConfig: c}); err != nil {
			t.Fatal(err)
		}
	}
	if built != 1 || len(rec.updates) != 1 || rec.updates[0] != c2 {
		t.Errorf("built %d builders, updates %v; want 1 builder and one update to the second config", built, rec.updates)
	}

	var last plain
	b = &endpointBalancer{child: stubChild{}, policy: Policy{NewPickerBuilder: func(c serviceconfig.LoadBalancingConfig) PickerBuilder { last = plain{c}; return last }}}
	b.UpdateClientConnState(balancer.ClientConnState{BalancerConfig: c1})
	b.UpdateClientConnState(balancer.ClientConnState{BalancerConfig: c2})
	if last.cfg != c2 || b.pb.(plain).cfg != c2 {
		t.Errorf("the PickerBuilder kept config %v after an update to %v", b.pb.(plain).cfg, c2)
	}
}
