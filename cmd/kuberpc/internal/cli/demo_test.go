package cli

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/kuberpc/kuberpc/manifests"
)

// TestDemoSendsORCAForWeightedRoundRobin: the demo's servers send the
// per-call ORCA reports weighted_round_robin weighs replicas by when, and
// only when, the demo's client balances with it.
func TestDemoSendsORCAForWeightedRoundRobin(t *testing.T) {
	for policy, want := range map[string]bool{"weighted_round_robin": true, "round_robin": false, "p2c_ewma": false} {
		app := demoApp(3, policy)
		if err := app.Validate(); err != nil {
			t.Fatalf("%s: %v", policy, err)
		}
		var got bool
		for _, o := range manifests.Objects(app) {
			if d, ok := o.(*appsv1.Deployment); ok {
				for _, e := range d.Spec.Template.Spec.Containers[0].Env {
					if e.Name == "ORCA_PER_CALL" {
						got = e.Value == "true"
					}
				}
			}
		}
		if got != want {
			t.Errorf("demo with --balancer %s: the servers send per-call ORCA reports: %v, want %v", policy, got, want)
		}
	}
}
