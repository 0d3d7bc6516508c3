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
	rbacv1 "k8s.io/api/rbac/v1"
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
	err := grantClusterRole(ctx, cs, "kuberpc:coredns", dnsUser, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "namespaces"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
	})
	if err != nil {
		return err
	}
	// CoreDNS runs on the host, not in a pod: the Service has no selector
	// and its EndpointSlice names the host's bridge address.
	return hostService(ctx, cs, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: DNSServiceIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
			},
		},
	})
}

// clusterDNSFlags are the node agent's flags for pods' resolv.conf.
func clusterDNSFlags() []string {
	host, _, _ := strings.Cut(DNSServer(), ":")
	return []string{"--cluster-dns=" + host, "--cluster-domain=" + ClusterDomain}
}
