package nodeagent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// resolvConf returns the /etc/resolv.conf a pod's containers see, as the
// kubelet writes it: for dnsPolicy ClusterFirst (the default) the cluster
// DNS with the pod's namespace search path and ndots:5, for None only the
// pod's dnsConfig, and "" (the host's own file) for Default or when the
// agent has no cluster DNS. A pod's dnsConfig adds its nameservers,
// searches and options in every case but Default.
func resolvConf(pod *corev1.Pod, clusterDNS, domain string) string {
	var servers, searches, options []string
	switch pod.Spec.DNSPolicy {
	case corev1.DNSDefault:
		return ""
	case corev1.DNSNone:
	default: // ClusterFirst, ClusterFirstWithHostNet
		if clusterDNS == "" {
			return ""
		}
		servers = []string{clusterDNS}
		searches = []string{pod.Namespace + ".svc." + domain, "svc." + domain, domain}
		options = []string{"ndots:5"}
	}
	if c := pod.Spec.DNSConfig; c != nil {
		servers = append(servers, c.Nameservers...)
		searches = append(searches, c.Searches...)
		for _, o := range c.Options {
			if o.Value != nil {
				options = append(options, o.Name+":"+*o.Value)
			} else {
				options = append(options, o.Name)
			}
		}
	}
	var b strings.Builder
	for _, s := range servers[:min(len(servers), 3)] { // the resolver reads three
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.String()
}

// resolvConfPath is the pod's resolv.conf, or "" when it uses the host's.
func (p *podRun) resolvConfPath() string {
	if p.resolv == "" {
		return ""
	}
	return filepath.Join(p.dir, "resolv.conf")
}

// writeResolvConf writes the pod's resolv.conf into its directory.
func (p *podRun) writeResolvConf() error {
	if p.resolv == "" {
		return nil
	}
	return os.WriteFile(p.resolvConfPath(), []byte(p.resolv), 0o644)
}
