package kubernetes_test

import (
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
