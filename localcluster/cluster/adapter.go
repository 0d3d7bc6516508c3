package cluster

import (
	"context"
	"os"
	"slices"
	"strconv"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

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

// metricsAdapterReady creates the adapter's RBAC (read pods; delegate
// authentication and authorization), its Service and the APIServices of
// custom.metrics.k8s.io v1beta2 and v1beta1, and waits until they are
// Available.
func (c *Cluster) metricsAdapterReady(ctx context.Context) error {
	cs, err := c.Client()
	if err != nil {
		return err
	}
	if err := ensureAdapterObjects(ctx, cs); err != nil {
		return err
	}
	ca, err := os.ReadFile(c.pki.ca.CertFile)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	ag, err := aggregator.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, v := range []string{"v1beta2", "v1beta1"} {
		err := ensureAPIService(ctx, ag, &apiregv1.APIService{
			ObjectMeta: metav1.ObjectMeta{Name: v + ".custom.metrics.k8s.io", Labels: map[string]string{"app.kubernetes.io/name": "kuberpc-metrics-adapter"}},
			Spec: apiregv1.APIServiceSpec{
				Service: &apiregv1.ServiceReference{Namespace: metav1.NamespaceSystem, Name: "kuberpc-metrics-adapter", Port: ptr(int32(443))},
				Group:   "custom.metrics.k8s.io", Version: v, CABundle: ca,
				GroupPriorityMinimum: 100, VersionPriority: map[string]int32{"v1beta2": 200, "v1beta1": 100}[v],
			},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func ensureAdapterObjects(ctx context.Context, cs kubernetes.Interface) error {
	create := func(err error) error {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "kuberpc:metrics-adapter"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	user := []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: metricsAdapterUser}}
	for name, ref := range map[string]string{"kuberpc:metrics-adapter": role.Name, "kuberpc:metrics-adapter:auth-delegator": "system:auth-delegator"} {
		b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: ref}, Subjects: user}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); create(err) != nil {
			return err
		}
	}
	reader := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kuberpc:metrics-adapter:auth-reader", Namespace: metav1.NamespaceSystem},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"}, Subjects: user}
	if _, err := cs.RbacV1().RoleBindings(metav1.NamespaceSystem).Create(ctx, reader, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	return hostService(ctx, cs, "kuberpc-metrics-adapter", "https", 443, MetricsAdapterPort)
}
