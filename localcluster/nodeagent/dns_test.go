package nodeagent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestResolvConf(t *testing.T) {
	two := "2"
	pod := func(policy corev1.DNSPolicy, cfg *corev1.PodDNSConfig) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}, Spec: corev1.PodSpec{DNSPolicy: policy, DNSConfig: cfg}}
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		dns  string
		want string
	}{
		{"ClusterFirst (the default)", pod("", nil), "198.18.0.1",
			"nameserver 198.18.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"},
		{"ClusterFirst with dnsConfig", pod(corev1.DNSClusterFirst, &corev1.PodDNSConfig{Searches: []string{"corp.example"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "edns0"}}}), "198.18.0.1",
			"nameserver 198.18.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5 ndots:2 edns0\n"},
		{"Default: the host's", pod(corev1.DNSDefault, nil), "198.18.0.1", ""},
		{"None: only dnsConfig", pod(corev1.DNSNone, &corev1.PodDNSConfig{Nameservers: []string{"198.18.0.53"}}), "198.18.0.1", "nameserver 198.18.0.53\n"},
		{"no cluster DNS: the host's", pod("", nil), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolvConf(tc.pod, tc.dns, "cluster.local"); got != tc.want {
				t.Errorf("resolvConf =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
