package e2e

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/workloadca"
	"github.com/kuberpc/kuberpc/security"
)

// securityApp is the example service with security on, the rest of its
// kuberpc.yaml being sec; callers in ns may call SayHello if they are
// the ServiceAccount "frontend".
func securityApp(t *testing.T, ns, sec string) {
	t.Helper()
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\nreplicas: 2\ndrain: {propagationDelay: 1s, timeout: 5s}\n"+
		"security:\n"+sec+"  rules:\n  - methods: [/example.ExampleService/SayHello]\n    callers: ["+ns+"/frontend]\n"))
	env.WaitReady(t, ns, exampleSelector, 2)
}

// workloadDir issues a certificate for ns/sa from ca into a directory, as
// the node agent does for a pod, and returns it.
func workloadDir(t *testing.T, ca *workloadca.CA, ns, sa string) string {
	t.Helper()
	iss, err := ca.Issue("spiffe://cluster.local/ns/"+ns+"/sa/"+sa, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), sa)
	if err := workloadca.WriteDir(dir, iss, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	return dir
}

// clusterWorkloadCA is the local cluster's workload CA, from its state.
func clusterWorkloadCA(t *testing.T) *workloadca.CA {
	t.Helper()
	dir := filepath.Join(env.Cluster.StateDir, "pki")
	certPEM, err := os.ReadFile(filepath.Join(dir, "workload-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "workload-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := workloadca.Load(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func serviceAccounts(t *testing.T, ns string, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// tokenFor asks the real TokenRequest API for sa's token for audience.
func tokenFor(t *testing.T, ns, sa, audience string) string {
	t.Helper()
	tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// expiredToken is sa's token for audience signed with the cluster's real
// service-account key, as the API server would have issued it, but
// expired an hour ago: the API server's own validation must refuse it.
func expiredToken(t *testing.T, ns, sa, audience string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.Cluster.StateDir, "pki", "sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := env.Client.CoreV1().ServiceAccounts(ns).Get(context.Background(), sa, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	enc := func(v any) string {
		j, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(j)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:" + ns + ":" + sa,
		"aud": []string{audience}, "iat": now.Add(-2 * time.Hour).Unix(), "nbf": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix(),
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": sa, "uid": string(acct.UID)}},
	})
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestTokenAuthorizationOnTheCluster: the example server with TLS from
// its pod's workload certificate, tokens reviewed by the real API server
// and a policy allowing SayHello to ServiceAccount frontend only: an
// allowed caller succeeds (its token from the TokenRequest API, sent from
// a file and as metadata), and no token, an expired token, a token for
// another audience and a token of another ServiceAccount are each refused
// with a code and a message that say which.
func TestTokenAuthorizationOnTheCluster(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccounts(t, ns, "frontend", "backend")
	securityApp(t, ns, "  tls: true\n  tokenAudience: example\n")
	ca := clusterWorkloadCA(t)
	tlsCfg := security.TLSConfig{Dir: workloadDir(t, ca, ns, "anyone"), ServerIdentity: ns + "/example"}

	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte(tokenFor(t, ns, "frontend", "example")), 0o600); err != nil {
		t.Fatal(err)
	}
	allowed := example.NewExampleServiceClient(dial(t, ns, client.WithTLS(tlsCfg), client.WithTokenFile(tokenPath)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 4 {
		r, err := allowed.SayHello(ctx, &example.Request{Name: "e2e"})
		if err != nil || r.GetMessage() != "Hello, e2e!" {
			t.Fatalf("allowed caller (token file): %v, %v", r, err)
		}
	}
	c := example.NewExampleServiceClient(dial(t, ns, client.WithTLS(tlsCfg)))
	withToken := func(tok string) context.Context {
		if tok == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	if _, err := c.SayHello(withToken(tokenFor(t, ns, "frontend", "example")), &example.Request{Name: "e2e"}); err != nil {
		t.Errorf("allowed caller (metadata): %v", err)
	}
	for _, tc := range []struct {
		name, token string
		code        codes.Code
		want        string
	}{
		{"no token", "", codes.Unauthenticated, "carries no identity"},
		{"expired token", expiredToken(t, ns, "frontend", "example"), codes.Unauthenticated, "expired"},
		{"token for another audience", tokenFor(t, ns, "frontend", "other"), codes.Unauthenticated, "audience"},
		{"token of a ServiceAccount the policy does not allow", tokenFor(t, ns, "backend", "example"), codes.PermissionDenied,
			"spiffe://cluster.local/ns/" + ns + "/sa/backend may not call /example.ExampleService/SayHello"},
	} {
		_, err := c.SayHello(withToken(tc.token), &example.Request{Name: "e2e"})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %v saying %q", tc.name, err, tc.code, tc.want)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	plain := example.NewExampleServiceClient(dial(t, ns))
	if _, err := plain.SayHello(ctx, &example.Request{Name: "e2e"}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client to the TLS server: %v, want UNAVAILABLE", err)
	}
}

// TestMutualTLSAuthorizationOnTheCluster: the example server with mTLS,
// its pods' certificates from the node agent's workload CA; a client
// whose certificate names the allowed ServiceAccount succeeds, one naming
// another is refused with PERMISSION_DENIED, and one whose certificate
// comes from another CA with UNAUTHENTICATED.
func TestMutualTLSAuthorizationOnTheCluster(t *testing.T) {
	ns := env.Namespace(t)
	securityApp(t, ns, "  mutualTLS: true\n")
	ca := clusterWorkloadCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(dir string) error {
		c := example.NewExampleServiceClient(dial(t, ns, client.WithTLS(security.TLSConfig{Dir: dir, MutualTLS: true, ServerIdentity: ns + "/example"})))
		_, err := c.SayHello(ctx, &example.Request{Name: "e2e"})
		return err
	}
	if err := call(workloadDir(t, ca, ns, "frontend")); err != nil {
		t.Fatalf("allowed caller: %v", err)
	}
	err := call(workloadDir(t, ca, ns, "backend"))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "sa/backend may not call") {
		t.Errorf("ServiceAccount the policy does not allow: %v, want PERMISSION_DENIED", err)
	}
	other, err := workloadca.New("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := workloadDir(t, other, ns, "frontend")
	if err := os.WriteFile(filepath.Join(foreign, security.CAFile), ca.CertPEM, 0o644); err != nil { // it trusts the server
		t.Fatal(err)
	}
	err = call(foreign)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("client certificate from another CA: %v, want UNAUTHENTICATED naming the unknown authority", err)
	} else {
		t.Logf("client certificate from another CA: %v", err)
	}
	err = call(workloadDir(t, ca, ns, "frontend"))
	if err != nil {
		t.Errorf("allowed caller again: %v", err)
	}
}
