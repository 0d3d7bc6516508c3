package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
	"github.com/kuberpc/kuberpc/localcluster/pki"
)

// TestKubeletAPIAuthorizes: the node agent authorizes every request to
// its kubelet API with the apiserver, as a kubelet with
// --authorization-mode=Webhook does. A user with a client certificate
// from the cluster's CA (as an approved CertificateSigningRequest gives
// one) but no role is forbidden the node's pods and its metrics, which a
// user granted nodes/proxy and nodes/metrics gets; a ServiceAccount's
// token is a credential too (forbidden without a role, not
// unauthenticated); a request with neither is unauthorized.
func TestKubeletAPIAuthorizes(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	agent := "https://" + net.JoinHostPort(podnet.Default.Gateway().String(), strconv.Itoa(cluster.NodeAgentPort))
	pkiDir := filepath.Join(env.Cluster.StateDir, "pki")
	ca, err := pki.LoadOrCreateCA(pkiDir, "ca", "")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	// A user of the cluster's CA: its name is new to every run, so that
	// no decision the agent cached for it remains.
	user := func(name string) *http.Client {
		p, err := ca.Issue(t.TempDir(), name, pki.Spec{CommonName: name + "-" + ns, Client: true})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}}
	}
	anonymous := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}

	// bob may read the node's pods and metrics, as metrics-server and a
	// node's monitoring agent may; eve may do nothing.
	role := "kuberpc-e2e-kubelet-reader-" + ns
	if _, err := env.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes/proxy", "nodes/metrics"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.RbacV1().ClusterRoles().Delete(ctx, role, metav1.DeleteOptions{}) })
	if _, err := env.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "bob-" + ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.RbacV1().ClusterRoleBindings().Delete(ctx, role, metav1.DeleteOptions{}) })
	bob, eve := user("bob"), user("eve")

	// A ServiceAccount's token, bound to nothing.
	if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "nobody", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	status := func(c *http.Client, path, token string) string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, agent+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return err.Error()
		}
		resp.Body.Close()
		return strconv.Itoa(resp.StatusCode)
	}
	for _, c := range []struct {
		who    string
		client *http.Client
		token  string
		path   string
		want   int
	}{
		{"bob (nodes/proxy)", bob, "", "/pods", http.StatusOK},
		{"bob (nodes/metrics)", bob, "", "/metrics/resource", http.StatusOK},
		{"eve (no role)", eve, "", "/pods", http.StatusForbidden},
		{"eve (no role)", eve, "", "/metrics/resource", http.StatusForbidden},
		{"eve (no role)", eve, "", "/containerLogs/kube-system/any/any", http.StatusForbidden},
		{"a ServiceAccount with no role", anonymous, tr.Status.Token, "/pods", http.StatusForbidden},
		{"no credential", anonymous, "", "/pods", http.StatusUnauthorized},
		{"a token that is not one", anonymous, "not-a-token", "/pods", http.StatusUnauthorized},
	} {
		if got := status(c.client, c.path, c.token); got != strconv.Itoa(c.want) {
			t.Errorf("%s: GET %s: %s; want %d", c.who, c.path, got, c.want)
		}
	}
}
