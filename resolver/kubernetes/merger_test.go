package kubernetes_test

import (
	"fmt"
	"slices"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"

	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// TestMergerIncremental checks that incremental updates give what a full
// merge of the same slices gives, as slices change, move addresses
// between them, and disappear.
func TestMergerIncremental(t *testing.T) {
	t.Parallel()
	target := kuberesolver.Target{Service: "example", PortName: "grpc"}
	a := slice("a", grpcPort, ready("198.18.0.1"), ready("198.18.0.2"))
	b := slice("b", grpcPort, ready("198.18.0.3"))
	steps := [][]*discoveryv1.EndpointSlice{
		{a, b},
		{slice("a", grpcPort, ready("198.18.0.1"), notReady("198.18.0.2")), b},                                         // one endpoint not ready
		{slice("a", grpcPort, ready("198.18.0.1")), slice("b", grpcPort, ready("198.18.0.3"), ready("198.18.0.2"))},    // 198.18.0.2 moves to b
		{slice("a", grpcPort, ready("198.18.0.1"), notReady("198.18.0.3")), slice("b", grpcPort, ready("198.18.0.3"))}, // listed twice
		{slice("b", grpcPort, ready("198.18.0.3"))},                                                                    // a deleted
		{slice("b", grpcPort, terminating("198.18.0.3"))},                                                              // fallback
		{},
	}
	m := kuberesolver.NewMerger(target, "")
	for i, ss := range steps {
		got, gotCounts := m.Update(ss)
		want, wantCounts := kuberesolver.Merge(ss, target, "")
		if !slices.Equal(addrs(got), addrs(want)) || gotCounts != wantCounts {
			t.Errorf("step %d: incremental %v %+v, full %v %+v", i, addrs(got), gotCounts, addrs(want), wantCounts)
		}
	}
}

// manyReady is n ready endpoints in slices of 100, 198.18.x.y.
func manyReady(n int) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for s := 0; s*100 < n; s++ {
		var eps []ep
		for i := s * 100; i < min(n, (s+1)*100); i++ {
			eps = append(eps, ready(fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)))
		}
		out = append(out, slice(fmt.Sprintf("s%d", s), grpcPort, eps...))
	}
	return out
}

// TestMergerSubset: with a subset size, a client balances over that many
// ready endpoints; an endpoint outside its subset coming or going leaves
// the subset alone, one inside it is replaced by one other; not-ready
// endpoints are never chosen; and over many clients every endpoint is
// chosen about equally often.
func TestMergerSubset(t *testing.T) {
	t.Parallel()
	target := kuberesolver.Target{Service: "example", PortName: "grpc"}
	all := manyReady(1000)
	m := kuberesolver.NewMerger(target, "")
	m.SetSubset(20)
	got, counts := m.Update(all)
	if len(got) != 20 || counts.Ready != 1000 {
		t.Fatalf("subset of 1000 = %d endpoints (counts %+v); want 20", len(got), counts)
	}
	first := addrs(got)
	if again, _ := m.Update(all); !slices.Equal(addrs(again), first) {
		t.Fatalf("same slices, different subset: %v then %v", first, addrs(again))
	}
	inSubset := map[string]bool{}
	for _, a := range first {
		inSubset[a] = true
	}
	// Drop one endpoint outside the subset, then one inside it.
	drop := func(ss []*discoveryv1.EndpointSlice, addr string) []*discoveryv1.EndpointSlice {
		out := slices.Clone(ss)
		for i, s := range out {
			for j, e := range s.Endpoints {
				if e.Addresses[0]+":50051" == addr {
					c := s.DeepCopy()
					c.Endpoints = slices.Delete(c.Endpoints, j, j+1)
					// A version of its own: two drops from the same slice are
					// two different changes (one "changed" for both made the
					// merger take the second for the first whenever both
					// endpoints shared a slice, which the seeded subset
					// sometimes chose).
					c.ResourceVersion = "without-" + addr
					out[i] = c
					return out
				}
			}
		}
		t.Fatalf("no endpoint %s", addr)
		return nil
	}
	outside := ""
	for _, s := range all {
		if a := s.Endpoints[0].Addresses[0] + ":50051"; !inSubset[a] {
			outside = a
			break
		}
	}
	if got, _ := m.Update(drop(all, outside)); !slices.Equal(addrs(got), first) {
		t.Errorf("dropping %s (outside the subset) changed it: %v → %v", outside, first, addrs(got))
	}
	got, _ = m.Update(drop(all, first[0]))
	kept := 0
	for _, a := range addrs(got) {
		if inSubset[a] {
			kept++
		}
	}
	if len(got) != 20 || kept != 19 || slices.Contains(addrs(got), first[0]) {
		t.Errorf("dropping %s (in the subset): %d endpoints, %d of the old; want 20 with 19 kept", first[0], len(got), kept)
	}
	// Not-ready endpoints are never chosen.
	mixed := []*discoveryv1.EndpointSlice{slice("a", grpcPort, ready("198.18.9.1"), notReady("198.18.9.2"), notReady("198.18.9.3"), ready("198.18.9.4"))}
	m2 := kuberesolver.NewMerger(target, "")
	m2.SetSubset(3)
	if got, _ := m2.Update(mixed); !slices.Equal(sorted(addrs(got)), []string{"198.18.9.1:50051", "198.18.9.4:50051"}) {
		t.Errorf("subset of 2 ready among 4 = %v; want the 2 ready", addrs(got))
	}
	// Balance: 300 clients, 100 endpoints, subsets of 10: each endpoint is
	// chosen by 30 clients on average.
	chosen := map[string]int{}
	few := manyReady(100)
	for range 300 {
		c := kuberesolver.NewMerger(target, "")
		c.SetSubset(10)
		got, _ := c.Update(few)
		for _, a := range addrs(got) {
			chosen[a]++
		}
	}
	hi := 0
	for _, n := range chosen {
		hi = max(hi, n)
	}
	if len(chosen) != 100 || hi > 60 {
		t.Errorf("300 clients' subsets cover %d of 100 endpoints, the busiest chosen %d times; want all, ≤ 2× the mean 30", len(chosen), hi)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }
