package manifests_test

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/kuberpc/kuberpc/manifests"
)

// FuzzParseAndRender: any kuberpc.yaml is parsed or refused, never a
// panic; what parses renders objects whose grace period is positive and
// that serialise to YAML.
func FuzzParseAndRender(f *testing.F) {
	for _, s := range []string{
		"name: greeter\nimage: kuberpc.local/greeter:v1\n",
		"name: g\nimage: x\ndrain: {propagationDelay: 59m, timeout: 59m}\nresources: {cpuRequest: 100m, cpuLimit: 1}\n",
		"name: g\nimage: x\nautoscaling: {minReplicas: 1, maxReplicas: 3, requestsPerSecond: 10}\ncallers: [{podLabels: {app: a}}]\n",
		"name: g\nimage: x\nenv: {PORT: '1'}\nenvOverride: [PORT]\n",
		"---\n---\n", "name: [", "drain: {timeout: 9223372036s}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		app, err := manifests.Parse(data)
		if err != nil {
			return
		}
		objs := manifests.Objects(app)
		for _, o := range objs {
			if d, ok := o.(*appsv1.Deployment); ok {
				if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g <= 0 {
					t.Fatalf("grace period %v for %q", g, data)
				}
			}
		}
		if _, err := manifests.YAML(objs); err != nil {
			t.Fatalf("YAML of parsed %q: %v", data, err)
		}
	})
}
