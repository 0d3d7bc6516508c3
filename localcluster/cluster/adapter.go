package cluster

import (
	"context"
	"slices"
	"strconv"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// Custom metrics: kuberpc's adapter (package metricsadapter) serves
// custom.metrics.k8s.io, each kuberpc server's request rate, in-flight
// calls and error ratio, registered with the aggregation layer as on a
// real cluster; the HPA controller reads it for Pods metric targets. It
// runs on the host (Options.MetricsAdapter), which reaches pods on the
// bridge, with a window and scrape interval short enough for tests.
const (
	// MetricsAdapterPort is the adapter's secure port, on the bridge
	// gateway.
	MetricsAdapterPort = 4444
	metricsAdapterUser = "system:kuberpc-metrics-adapter"
)

// metricsAdapterServingNames are the names the adapter's certificate
// covers: its Service's.
var metricsAdapterServingNames = []string{"kuberpc-metrics-adapter.kube-system.svc", "kuberpc-metrics-adapter.kube-system", "kuberpc-metrics-adapter"}

func (c *Cluster) metricsAdapter() process {
	kc := c.kubeconfigFor("metrics-adapter")
	return process{name: "metrics-adapter", path: c.opts.MetricsAdapter[0], args: append(slices.Clone(c.opts.MetricsAdapter[1:]),
		"--secure-port="+strconv.Itoa(MetricsAdapterPort), "--bind-address="+podnet.Default.Gateway().String(),
		"--tls-cert-file="+c.pki.adapterServing.CertFile, "--tls-private-key-file="+c.pki.adapterServing.KeyFile,
		"--lister-kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--window=20s", "--interval=2s",
	)}
}

// metricsAdapterReady registers the adapter with the aggregation layer
// (its RBAC: read pods; its Service; the APIServices of
// custom.metrics.k8s.io v1beta2 and v1beta1) and waits until they are
// Available.
func (c *Cluster) metricsAdapterReady(ctx context.Context) error {
	a := aggregatedAPI{
		user: metricsAdapterUser, role: "kuberpc:metrics-adapter", service: "kuberpc-metrics-adapter", port: MetricsAdapterPort,
		rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}}},
	}
	for v, prio := range map[string]int32{"v1beta2": 200, "v1beta1": 100} {
		a.apiServices = append(a.apiServices, apiregv1.APIService{
			ObjectMeta: metav1.ObjectMeta{Name: v + ".custom.metrics.k8s.io", Labels: map[string]string{"app.kubernetes.io/name": "kuberpc-metrics-adapter"}},
			Spec:       apiregv1.APIServiceSpec{Group: "custom.metrics.k8s.io", Version: v, GroupPriorityMinimum: 100, VersionPriority: prio},
		})
	}
	return c.ensureAggregatedAPI(ctx, a)
}
