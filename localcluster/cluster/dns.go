package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// Cluster DNS: CoreDNS with its kubernetes plugin, as on a real cluster.
const (
	// ClusterDomain is the cluster's DNS domain.
	ClusterDomain = "cluster.local"
	// DNSServiceIP is the ClusterIP of kube-system/kube-dns.
	DNSServiceIP = "198.19.0.10"
	// dnsReadyPort and dnsHealthPort are CoreDNS's ready and health
	// endpoints, on loopback.
	dnsReadyPort  = 8181
	dnsHealthPort = 8053
	dnsUser       = "system:kuberpc-coredns"
)

// DNSServer is the address CoreDNS answers on, the pod bridge's gateway,
// port 53: pods reach it directly (their resolv.conf names it; they have
// no route to ClusterIPs), and so does the host, for example with a
// grpc-go target "dns://198.18.0.1:53/name.namespace.svc.cluster.local:port".
func DNSServer() string { return net.JoinHostPort(podnet.Default.Gateway().String(), "53") }

func (c *Cluster) corefile() string { return filepath.Join(c.StateDir, "Corefile") }

// writeCorefile writes CoreDNS's configuration: the kubernetes plugin for
// the cluster domain and reverse zones, answers cached for 5 s (a
// rollout's new endpoints show within that), nothing forwarded (the
// machine has no upstream it may use).
func (c *Cluster) writeCorefile() error {
	conf := fmt.Sprintf(`.:53 {
    bind %s
    ready 127.0.0.1:%d
    health 127.0.0.1:%d
    errors
    loadbalance
    cache 5
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s kuberpc
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
}
`, podnet.Default.Gateway(), dnsReadyPort, dnsHealthPort, ClusterDomain, c.kubeconfigFor("coredns"))
	return os.WriteFile(c.corefile(), []byte(conf), 0o644)
}

func (c *Cluster) coreDNS() process {
	return process{name: "coredns", path: c.Bin.Path("coredns"), args: []string{"-conf", c.corefile()}}
}

// coreDNSReady creates what CoreDNS needs in the cluster (its least
// privilege: list and watch Services, EndpointSlices and Namespaces; the
// kube-dns Service with an EndpointSlice naming CoreDNS's address), then
// waits for CoreDNS's ready endpoint, which answers once the kubernetes
// plugin has synced.
func (c *Cluster) coreDNSReady(ctx context.Context) error {
	cs, err := c.Client()
	if err != nil {
		return err
	}
	if err := ensureDNSObjects(ctx, cs); err != nil {
		return err
	}
	return checkHealth(ctx, http.DefaultClient, "coredns /ready", fmt.Sprintf("http://127.0.0.1:%d/ready", dnsReadyPort))
}

func ensureDNSObjects(ctx context.Context, cs kubernetes.Interface) error {
	create := func(err error) error {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "kuberpc:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kuberpc:coredns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: dnsUser}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	labels := map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: metav1.NamespaceSystem, Labels: labels},
		Spec: corev1.ServiceSpec{
			ClusterIP: DNSServiceIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
	// Looked up first: creating it again fails on its ClusterIP ("already
	// allocated") before the name is compared.
	if _, err := cs.CoreV1().Services(metav1.NamespaceSystem).Get(ctx, svc.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := cs.CoreV1().Services(metav1.NamespaceSystem).Create(ctx, svc, metav1.CreateOptions{}); create(err) != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	// CoreDNS runs on the host, not in a pod: the Service has no selector
	// and this slice names the host's bridge address.
	ready := true
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	dnsName, tcpName, port := "dns", "dns-tcp", int32(53)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-host", Namespace: metav1.NamespaceSystem, Labels: map[string]string{
			discoveryv1.LabelServiceName: "kube-dns", discoveryv1.LabelManagedBy: "kuberpc-local-cluster",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{podnet.Default.Gateway().String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &dnsName, Protocol: &udp, Port: &port}, {Name: &tcpName, Protocol: &tcp, Port: &port}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem).Create(ctx, slice, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	return nil
}

// clusterDNSFlags are the node agent's flags for pods' resolv.conf.
func clusterDNSFlags() []string {
	host, _, _ := strings.Cut(DNSServer(), ":")
	return []string{"--cluster-dns=" + host, "--cluster-domain=" + ClusterDomain}
}
