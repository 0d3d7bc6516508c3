package nodeagent

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestResourceFieldValueIsTheKubelets: a resourceFieldRef gives what the
// kubelet gives: the quantity divided by the divisor (1 by default),
// rounded up — bytes for memory, so GOMEMLIMIT can take limits.memory as
// is — and the node's allocatable amount for a limit the container does
// not set. Before, the agent gave the quantity's string ("256Mi"),
// ignored the divisor and gave "0" for an unset limit.
func TestResourceFieldValueIsTheKubelets(t *testing.T) {
	c := corev1.Container{Name: "server", Resources: corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi"), corev1.ResourceCPU: resource.MustParse("500m")},
		Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
	}}
	noLimits := corev1.Container{Name: "server"}
	node := corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourceCPU: resource.MustParse("2")}
	for _, tc := range []struct {
		c        corev1.Container
		resource string
		divisor  string
		want     string
	}{
		{c, "limits.memory", "", "268435456"},
		{c, "limits.memory", "1Mi", "256"},
		{c, "limits.cpu", "", "1"},
		{c, "limits.cpu", "1m", "500"},
		{c, "requests.memory", "", "67108864"},
		{c, "requests.cpu", "", "0"},
		{noLimits, "limits.memory", "", "8589934592"},
		{noLimits, "limits.cpu", "", "2"},
	} {
		fs := &corev1.ResourceFieldSelector{Resource: tc.resource}
		if tc.divisor != "" {
			fs.Divisor = resource.MustParse(tc.divisor)
		}
		got, err := resourceFieldValue(fs, tc.c, node)
		if err != nil || got != tc.want {
			t.Errorf("%s (divisor %q, limits %v): %q, %v; want %q", tc.resource, tc.divisor, tc.c.Resources.Limits, got, err, tc.want)
		}
	}
	if c.Resources.Limits == nil || noLimits.Resources.Limits != nil {
		t.Error("resourceFieldValue changed the container it was given")
	}
	if _, err := resourceFieldValue(&corev1.ResourceFieldSelector{Resource: "limits.gpu"}, c, node); err == nil || !strings.Contains(err.Error(), "limits.gpu") {
		t.Errorf("an unsupported resource: %v, want an error naming it", err)
	}
}
