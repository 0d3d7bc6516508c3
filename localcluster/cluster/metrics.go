package cluster

import (
	"context"
	"fmt"
	"os"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// Resource metrics: sigs.k8s.io/metrics-server, registered with the
// apiserver's aggregation layer as on a real cluster (an APIService for
// metrics.k8s.io backed by the kube-system/metrics-server Service), so
// that `kubectl top` and the HPA controller's CPU targets work. It runs
// on the host, as CoreDNS does; the Service's EndpointSlice names the
// host's bridge address, which the apiserver reaches directly
// (--enable-aggregator-routing).
const (
	// MetricsServerPort is metrics-server's secure port, on the bridge
	// gateway.
	MetricsServerPort = 4443
	metricsServerUser = "system:kuberpc-metrics-server"
)

func (c *Cluster) metricsServer() process {
	return process{name: "metrics-server", path: c.Bin.Path("metrics-server"), args: []string{
		"--secure-port=" + strconv.Itoa(MetricsServerPort), "--bind-address=" + podnet.Default.Gateway().String(),
		"--tls-cert-file=" + c.pki.metricsServing.CertFile, "--tls-private-key-file=" + c.pki.metricsServing.KeyFile,
		"--kubeconfig=" + c.kubeconfigFor("metrics-server"),
		"--authentication-kubeconfig=" + c.kubeconfigFor("metrics-server"),
		"--authorization-kubeconfig=" + c.kubeconfigFor("metrics-server"),
		"--kubelet-certificate-authority=" + c.pki.ca.CertFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-use-node-status-port",
		"--metric-resolution=10s", "--kubelet-request-timeout=5s",
	}}
}

// metricsServerReady registers metrics-server with the aggregation layer
// (its RBAC: read nodes, pods and the kubelet's metrics; its Service and
// APIService) and waits until the apiserver reports it Available.
func (c *Cluster) metricsServerReady(ctx context.Context) error {
	return c.ensureAggregatedAPI(ctx, aggregatedAPI{
		user: metricsServerUser, role: "kuberpc:metrics-server", service: "metrics-server", port: MetricsServerPort,
		rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes/metrics"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"}},
		},
		apiServices: []apiregv1.APIService{{
			ObjectMeta: metav1.ObjectMeta{Name: "v1beta1.metrics.k8s.io", Labels: map[string]string{"k8s-app": "metrics-server"}},
			Spec:       apiregv1.APIServiceSpec{Group: "metrics.k8s.io", Version: "v1beta1", GroupPriorityMinimum: 100, VersionPriority: 100},
		}},
	})
}

// aggregatedAPI is a component on the host serving an API through the
// aggregation layer.
type aggregatedAPI struct {
	// user is its identity, granted rules (ClusterRole role), and the
	// delegation of authentication and authorization.
	user, role string
	rules      []rbacv1.PolicyRule
	// service in kube-system names the host's bridge address and port.
	service string
	port    int32
	// apiServices are registered against service, with the cluster CA.
	apiServices []apiregv1.APIService
}

// ensureAggregatedAPI creates what a: needs in the cluster and waits
// until every APIService of it is Available.
func (c *Cluster) ensureAggregatedAPI(ctx context.Context, a aggregatedAPI) error {
	cs, err := c.Client()
	if err != nil {
		return err
	}
	if err := ensureAggregatedRBAC(ctx, cs, a); err != nil {
		return err
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: a.service}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(a.port)},
	}}}
	if err := hostService(ctx, cs, svc); err != nil {
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
	for _, svc := range a.apiServices {
		svc.Spec.Service = &apiregv1.ServiceReference{Namespace: metav1.NamespaceSystem, Name: a.service, Port: ptr(int32(443))}
		svc.Spec.CABundle = ca
		if err := ensureAPIService(ctx, ag, &svc); err != nil {
			return err
		}
	}
	return nil
}

// ensureAPIService creates or updates svc and waits until it is Available.
func ensureAPIService(ctx context.Context, ag aggregator.Interface, svc *apiregv1.APIService) error {
	cur, err := ag.ApiregistrationV1().APIServices().Get(ctx, svc.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = ag.ApiregistrationV1().APIServices().Create(ctx, svc, metav1.CreateOptions{})
	case err == nil:
		svc.ResourceVersion = cur.ResourceVersion
		_, err = ag.ApiregistrationV1().APIServices().Update(ctx, svc, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	cur, err = ag.ApiregistrationV1().APIServices().Get(ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range cur.Status.Conditions {
		if cond.Type == apiregv1.Available {
			if cond.Status == apiregv1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("APIService %s not available: %s: %s", svc.Name, cond.Reason, cond.Message)
		}
	}
	return fmt.Errorf("APIService %s has no Available condition yet", svc.Name)
}

// hostService creates, once, svc (a Service of kube-system without a
// selector) and the EndpointSlice that names a component running on the
// host's bridge address, at each port's target port.
func hostService(ctx context.Context, cs kubernetes.Interface, svc *corev1.Service) error {
	svc.Namespace = metav1.NamespaceSystem
	// Looked up first: creating a Service with a fixed ClusterIP again
	// fails on the address ("already allocated") before the name.
	if _, err := cs.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := cs.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	} else if err != nil {
		return err
	}
	ready := true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-host", Namespace: svc.Namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "kuberpc-local-cluster",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{podnet.Default.Gateway().String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
	for _, p := range svc.Spec.Ports {
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(p.Protocol), Port: ptr(p.TargetPort.IntVal)})
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(svc.Namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// ensureAggregatedRBAC grants a's user its rules and the delegation of
// authentication and authorization (system:auth-delegator and the
// extension-apiserver-authentication-reader Role), as on a real cluster.
func ensureAggregatedRBAC(ctx context.Context, cs kubernetes.Interface, a aggregatedAPI) error {
	if err := grantClusterRole(ctx, cs, a.role, a.user, a.rules); err != nil {
		return err
	}
	if err := bindClusterRole(ctx, cs, a.role+":auth-delegator", "system:auth-delegator", a.user); err != nil {
		return err
	}
	reader := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: a.role + ":auth-reader", Namespace: metav1.NamespaceSystem},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: a.user}}}
	if _, err := cs.RbacV1().RoleBindings(metav1.NamespaceSystem).Create(ctx, reader, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// metricsServingNames are the names metrics-server's certificate covers:
// the Service's, which the apiserver checks against the APIService.
var metricsServingNames = []string{"metrics-server.kube-system.svc", "metrics-server.kube-system", "metrics-server"}

func ptr[T any](v T) *T { return &v }
