package random

import (
	"testing"

	"google.golang.org/grpc/balancer"

	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
)

type namedSC struct {
	balancer.SubConn
	name string
}

type scPicker struct{ sc *namedSC }

func (p scPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{SubConn: p.sc}, nil
}

// TestPickUsesRandIndex: the pick is the endpoint at the random index,
// drawn over exactly the READY endpoints.
func TestPickUsesRandIndex(t *testing.T) {
	var drawnFrom []int
	next := []int{2, 0, 1}
	old := randIntN
	t.Cleanup(func() { randIntN = old })
	randIntN = func(n int) int {
		drawnFrom = append(drawnFrom, n)
		v := next[0]
		next = next[1:]
		return v
	}
	var eps []endpointbalancer.Endpoint
	for _, n := range []string{"a", "b", "c"} {
		eps = append(eps, endpointbalancer.Endpoint{Key: n, Picker: scPicker{&namedSC{name: n}}})
	}
	p := pickerBuilder{}.Build(eps)
	var got string
	for range 3 {
		res, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		got += res.SubConn.(*namedSC).name
	}
	if got != "cab" {
		t.Errorf("picks = %q; want c, a, b for random indexes 2, 0, 1", got)
	}
	for _, n := range drawnFrom {
		if n != 3 {
			t.Errorf("drew from %d endpoints; want the 3 READY ones", n)
		}
	}
}
