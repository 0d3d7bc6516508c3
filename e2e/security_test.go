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
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/workloadca"
	"github.com/kuberpc/kuberpc/localcluster/clustertest"
	"github.com/kuberpc/kuberpc/security"
)

// securityApp is the example service with security on, the rest of its
// kuberpc.yaml being sec; callers in ns may call SayHello if they are
// the ServiceAccount "frontend". It returns once the pods' first
// workload certificates have expired (clustertest.WorkloadCertTTL), so
// that the tests run on renewed ones that the servers, re-reading their
// files every 10 s (TLS_REFRESH's default), have not yet read on their
// schedule.
func securityApp(t *testing.T, ns, sec string) {
	t.Helper()
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\nreplicas: 2\ndrain: {propagationDelay: 1s, timeout: 5s}\n"+
		"security:\n"+sec+"  rules:\n  - methods: [/example.ExampleService/SayHello]\n    callers: ["+ns+"/frontend]\n"))
	env.WaitReady(t, ns, exampleSelector, 2)
	time.Sleep(clustertest.WorkloadCertTTL)
}

// workloadDir issues a certificate for ns/sa from ca into a directory, as
// the node agent does for a pod, and returns it.
func workloadDir(t *testing.T, ca *workloadca.CA, ns, sa string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), sa)
	if _, err := ca.IssueDir(dir, "spiffe://cluster.local/ns/"+ns+"/sa/"+sa, time.Hour); err != nil {
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
	tlsCfg := security.TLSConfig{Dir: workloadDir(t, ca, ns, "anyone"), ServerIdentity: ns + "/example", Refresh: security.DefaultRefresh}

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
		{"token that is not a JWT", "opaque", codes.Unauthenticated, "not a JWT"},
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
	// The server refused the last three tokens without asking the API
	// server (security.TokenReviewer reads their claims); the API server
	// refuses each of them too.
	for name, tok := range map[string]string{
		"expired":          expiredToken(t, ns, "frontend", "example"),
		"another audience": tokenFor(t, ns, "frontend", "other"),
		"not a JWT":        "opaque",
	} {
		tr, err := env.Client.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{
			Spec: authv1.TokenReviewSpec{Token: tok, Audiences: []string{"example"}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if tr.Status.Authenticated {
			t.Errorf("the API server authenticates the token %s for audience example; kuberpc refuses it without asking", name)
		} else {
			t.Logf("the API server refuses the token %s too: %s", name, tr.Status.Error)
		}
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
		c := example.NewExampleServiceClient(dial(t, ns, client.WithTLS(security.TLSConfig{Dir: dir, MutualTLS: true, ServerIdentity: ns + "/example", Refresh: security.DefaultRefresh})))
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

// TestCertificateRotationOnTheCluster: the node agent renews each pod's
// workload certificate every 2 s (clustertest.WorkloadCertTTL 3 s) while a
// client calls two mTLS replicas: no call fails, no pod restarts, the
// long-lived connections keep the session they began with, and fresh
// connections see each new certificate (10 rotations in CI, 30 in the
// full run).
func TestCertificateRotationOnTheCluster(t *testing.T) {
	ns := env.Namespace(t)
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\nreplicas: 2\ndrain: {propagationDelay: 1s, timeout: 5s}\n"+
		"env: {TLS_REFRESH: 500ms}\nsecurity:\n  mutualTLS: true\n  rules:\n  - methods: [\"*\"]\n    callers: ["+ns+"/frontend]\n"))
	pods := env.WaitReady(t, ns, exampleSelector, 2)
	rotations := 10
	if os.Getenv("KUBERPC_E2E_FULL") != "" {
		rotations = 30
	}
	ca := clusterWorkloadCA(t)
	tlsCfg := security.TLSConfig{Dir: workloadDir(t, ca, ns, "frontend"), MutualTLS: true, ServerIdentity: ns + "/example", Refresh: 500 * time.Millisecond}
	long := example.NewExampleServiceClient(dial(t, ns, client.WithTLS(tlsCfg)))
	serial := func(ctx context.Context, c example.ExampleServiceClient) (addr, serial string, err error) {
		var p peer.Peer
		if _, err := c.SayHello(ctx, &example.Request{Name: "e2e"}, grpc.Peer(&p)); err != nil {
			return "", "", err
		}
		ti, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(ti.State.PeerCertificates) == 0 {
			return "", "", fmt.Errorf("no server certificate (%T)", p.AuthInfo)
		}
		return p.Addr.String(), ti.State.PeerCertificates[0].SerialNumber.String(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rotations)*4*time.Second+time.Minute)
	defer cancel()
	var (
		mu     sync.Mutex
		first  = map[string]string{} // pod address → serial of the long-lived connection
		calls  int
		failed []error
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				addr, s, err := serial(ctx, long)
				mu.Lock()
				calls++
				if err != nil {
					failed = append(failed, err)
				} else if f, ok := first[addr]; !ok {
					first[addr] = s
				} else if f != s {
					failed = append(failed, fmt.Errorf("long-lived connection to %s changed certificate %s → %s", addr, f, s))
				}
				mu.Unlock()
			}
		}()
	}
	seen := map[string]bool{}
	for start := time.Now(); len(seen) < rotations+1 && time.Since(start) < time.Duration(rotations)*4*time.Second; {
		time.Sleep(time.Second)
		ip := pods[len(seen)%2].Status.PodIP
		cc, err := client.Dial("passthrough:///"+net.JoinHostPort(ip, "50051"), client.WithoutMetrics(), client.WithTLS(tlsCfg))
		if err != nil {
			t.Fatal(err)
		}
		_, s, err := serial(ctx, example.NewExampleServiceClient(cc))
		cc.Close()
		mu.Lock()
		calls++
		if err != nil {
			failed = append(failed, fmt.Errorf("fresh connection: %w", err))
		}
		mu.Unlock()
		if err == nil {
			seen[s] = true
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d calls, %d failed; fresh connections saw %d server certificates (%d rotations wanted); long-lived connections kept %d", calls, len(failed), len(seen), rotations, len(first))
	for _, err := range failed[:min(len(failed), 5)] {
		t.Errorf("call failed during rotation: %v", err)
	}
	if len(seen) < rotations {
		t.Errorf("fresh connections saw %d certificates, want ≥ %d rotations", len(seen), rotations)
	}
	after, err := env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: exampleSelector})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range after.Items {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 {
				t.Errorf("pod %s restarted %d times during rotation", p.Name, cs.RestartCount)
			}
		}
	}
}
