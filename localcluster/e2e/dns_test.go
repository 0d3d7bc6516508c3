package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/localcluster/clustertest"
)

// clusterResolver asks the cluster's CoreDNS, as the host's tests do.
func clusterResolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, cluster.DNSServer())
	}}
}

// TestClusterDNS: CoreDNS, watching the apiserver, answers a Service's
// name with its ClusterIP and a headless Service's with its ready pods'
// IPs, follows a scale-down within its cache TTL, and pods resolve the
// short name through the resolv.conf the node agent gives them (search
// path of their namespace, as a kubelet writes it).
func TestClusterDNS(t *testing.T) {
	ns := env.Namespace(t)
	pods := env.DeployExample(t, ns, 3, "kuberpc.local/example:v1")
	env.Kubectl(t, ns, `apiVersion: v1
kind: Service
metadata: {name: example-headless}
spec:
  clusterIP: None
  selector: {app: example}
  ports: [{name: grpc, port: 50051}]
`, "apply", "-f", "-")
	svc, err := env.Client.CoreV1().Services(ns).Get(context.Background(), "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := clusterResolver()
	lookup := func(name string) []string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		addrs, _ := r.LookupHost(ctx, name)
		slices.Sort(addrs)
		return addrs
	}
	clustertest.WaitFor(t, 30*time.Second, "the Service's name to resolve", func() (bool, string) {
		got := lookup("example." + ns + ".svc.cluster.local")
		return slices.Equal(got, []string{svc.Spec.ClusterIP}), fmt.Sprint(got)
	})
	var podIPs []string
	for _, p := range pods {
		podIPs = append(podIPs, p.Status.PodIP)
	}
	slices.Sort(podIPs)
	clustertest.WaitFor(t, 30*time.Second, "the headless Service to list its pods", func() (bool, string) {
		got := lookup("example-headless." + ns + ".svc.cluster.local")
		return slices.Equal(got, podIPs), fmt.Sprint(got, " want ", podIPs)
	})
	if got := lookup("nothing." + ns + ".svc.cluster.local"); len(got) != 0 {
		t.Errorf("a Service that does not exist resolved to %v", got)
	}

	env.Kubectl(t, ns, "", "scale", "deployment/example", "--replicas=1")
	clustertest.WaitFor(t, 60*time.Second, "the headless name to follow the scale-down", func() (bool, string) {
		got := lookup("example-headless." + ns + ".svc.cluster.local")
		return len(got) == 1, fmt.Sprint(got)
	})

	// In a pod: getent resolves through the pod's /etc/resolv.conf.
	if err := writeImage(env.Images(), "kuberpc.local/getent:v1", "/usr/bin/getent"); err != nil {
		t.Fatal(err)
	}
	env.Kubectl(t, ns, "", "run", "lookup", "--image=kuberpc.local/getent:v1", "--restart=Never", "--", "hosts", "example")
	p := waitContainer(t, ns, "lookup", "getent to finish", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool {
		return cs.State.Terminated != nil
	})
	out := env.Kubectl(t, ns, "", "logs", "lookup")
	if code := p.Status.ContainerStatuses[0].State.Terminated.ExitCode; code != 0 || !strings.HasPrefix(out, svc.Spec.ClusterIP+" ") {
		t.Errorf("in a pod, getent hosts example exited %d and printed %q; want %s and the name (search path %s.svc.cluster.local)", code, out, svc.Spec.ClusterIP, ns)
	}
}
