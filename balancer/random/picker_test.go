package random

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/balancer"

	"github.com/kuberpc/kuberpc/internal/attempts"
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

// TestRetriesAreDrawnFromTheUntried: the attempts of one call (a context
// carrying an attempts.Tried) are drawn from the endpoints it has not
// tried, then, once it has tried them all, from all of them again.
func TestRetriesAreDrawnFromTheUntried(t *testing.T) {
	var drawnFrom []int
	old := randIntN
	t.Cleanup(func() { randIntN = old })
	randIntN = func(n int) int { drawnFrom = append(drawnFrom, n); return 0 }
	var eps []endpointbalancer.Endpoint
	for _, n := range []string{"a", "b", "c"} {
		eps = append(eps, endpointbalancer.Endpoint{Key: n, Picker: scPicker{&namedSC{name: n}}})
	}
	p := pickerBuilder{}.Build(eps)
	ctx := attempts.NewContext(context.Background())
	var got string
	for range 4 {
		res, err := p.Pick(balancer.PickInfo{Ctx: ctx})
		if err != nil {
			t.Fatal(err)
		}
		got += res.SubConn.(*namedSC).name
	}
	if got != "abca" || !slices.Equal(drawnFrom, []int{3, 2, 1, 3}) {
		t.Errorf("one call's picks %q drawn from %v endpoints; want a, b, c, a drawn from 3, 2, 1, 3", got, drawnFrom)
	}
	// Another call starts afresh.
	res, err := p.Pick(balancer.PickInfo{Ctx: attempts.NewContext(context.Background())})
	if err != nil || res.SubConn.(*namedSC).name != "a" {
		t.Errorf("a new call's pick: %v, %v; want a", res.SubConn, err)
	}
}

type failingPicker struct{}

func (failingPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
}

// TestAFailedPickIsNotAnAttempt: an endpoint whose own picker fails the
// pick (grpc-go picks again) is not recorded as tried.
func TestAFailedPickIsNotAnAttempt(t *testing.T) {
	old := randIntN
	t.Cleanup(func() { randIntN = old })
	randIntN = func(int) int { return 0 }
	p := pickerBuilder{}.Build([]endpointbalancer.Endpoint{{Key: "a", Picker: failingPicker{}}, {Key: "b", Picker: failingPicker{}}})
	ctx := attempts.NewContext(context.Background())
	if _, err := p.Pick(balancer.PickInfo{Ctx: ctx}); err != balancer.ErrNoSubConnAvailable {
		t.Fatalf("Pick: %v; want the endpoint's ErrNoSubConnAvailable", err)
	}
	if attempts.FromContext(ctx).Has("a") {
		t.Error("a, whose pick failed, is recorded as tried")
	}
}
