package metricsadapter

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/labels"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/kuberpc/kuberpc/manifests"
)

// The Deployment selects its own pods, which carry the scraper's labels
// (the first e2e dry run found the selector overwritten by them), and the
// APIServices point at the Service.
func TestManifests(t *testing.T) {
	var deploys, apis int
	for _, o := range Manifests("monitoring", "registry.example/kuberpc:v1") {
		switch o := o.(type) {
		case *appsv1.Deployment:
			deploys++
			sel := labels.SelectorFromSet(o.Spec.Selector.MatchLabels)
			pod := labels.Set(o.Spec.Template.Labels)
			if !sel.Matches(pod) || !labels.SelectorFromSet(manifests.ScraperLabels).Matches(pod) {
				t.Errorf("pod labels %v: selector %v or scraper labels %v do not match", pod, sel, manifests.ScraperLabels)
			}
			if o.Namespace != "monitoring" || o.Spec.Template.Spec.Containers[0].Image != "registry.example/kuberpc:v1" {
				t.Errorf("deployment %s/%s runs %s", o.Namespace, o.Name, o.Spec.Template.Spec.Containers[0].Image)
			}
		case *apiregv1.APIService:
			apis++
			if s := o.Spec.Service; s == nil || s.Namespace != "monitoring" || s.Name != Name || o.Spec.Group != "custom.metrics.k8s.io" {
				t.Errorf("APIService %s: %+v", o.Name, o.Spec)
			}
		}
	}
	if deploys != 1 || apis != 2 {
		t.Errorf("%d Deployments, %d APIServices; want 1 and 2", deploys, apis)
	}
}
