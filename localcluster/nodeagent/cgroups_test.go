package nodeagent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// limitsOf converts as the kubelet does.
func TestLimitsOf(t *testing.T) {
	q := resource.MustParse
	for _, tc := range []struct {
		name   string
		r      corev1.ResourceRequirements
		want   limits
		weight uint64
	}{
		{"best effort", corev1.ResourceRequirements{}, limits{shares: 2}, 1},
		{"request only", corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("100m")}}, limits{shares: 102}, 4},
		{"limit only: request defaults to it", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: q("200m")}},
			limits{shares: 204, quota: 20000}, 8},
		{"both, and memory", corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: q("1"), corev1.ResourceMemory: q("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: q("2"), corev1.ResourceMemory: q("256Mi")}},
			limits{shares: 1024, quota: 200000, memoryBytes: 256 << 20}, 39},
		{"tiny limit: at least 1 ms", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: q("1m")}},
			limits{shares: 2, quota: 1000}, 1},
	} {
		got := limitsOf(tc.r)
		if got != tc.want || got.weight() != tc.weight {
			t.Errorf("%s: limits %+v weight %d; want %+v weight %d", tc.name, got, got.weight(), tc.want, tc.weight)
		}
	}
}
