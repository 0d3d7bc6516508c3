package server_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/workloadca"
	"github.com/kuberpc/kuberpc/security"
	"github.com/kuberpc/kuberpc/server"
)

// pki is a CA and the TLS directories of the workloads it issued.
type pki struct {
	ca  *workloadca.CA
	dir string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := workloadca.New("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: ca, dir: t.TempDir()}
}

// issue writes a certificate for namespace/name into a directory of its
// own and returns it.
func (p *pki) issue(t *testing.T, ns, name string) string {
	t.Helper()
	dir := filepath.Join(p.dir, ns+"-"+name)
	p.reissue(t, dir, ns, name)
	return dir
}

func (p *pki) reissue(t *testing.T, dir, ns, name string) {
	if _, err := p.ca.IssueDir(dir, "spiffe://cluster.local/ns/"+ns+"/sa/"+name, time.Hour); err != nil {
		t.Error(err)
	}
}

// callerService records the caller its handlers saw.
type callerService struct {
	example.Greeter
	calls atomic.Int32
	last  atomic.Value // string
}

func (c *callerService) SayHello(ctx context.Context, req *example.Request) (*example.Response, error) {
	c.calls.Add(1)
	if caller, ok := security.CallerFrom(ctx); ok {
		c.last.Store(caller.String() + " via " + string(caller.Source))
	}
	return c.Greeter.SayHello(ctx, req)
}

func startSecure(t *testing.T, cfg server.Config, opts ...server.Option) (*callerService, string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := server.New(append([]server.Option{server.WithConfig(cfg), server.WithRegistry(reg), server.WithLogger(discardLogger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	svc := &callerService{}
	example.RegisterExampleServiceServer(srv, svc)
	example.RegisterStreamServiceServer(srv, svc)
	return svc, serveLoopback(t, srv), reg
}

func secureClient(t *testing.T, addr string, opts ...client.Option) example.ExampleServiceClient {
	t.Helper()
	cc, err := client.Dial("passthrough:///"+addr, append([]client.Option{client.WithoutMetrics()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return example.NewExampleServiceClient(cc)
}

func secureConfig(dir string) server.Config {
	cfg := quickDrain()
	cfg.Security.TLSDir = dir
	return cfg
}

// TestMutualTLSIdentity: with mTLS the caller's identity is the SPIFFE ID
// of its certificate, handed to the handler; a client without a
// certificate, or with one from another CA, is refused with
// UNAUTHENTICATED saying which; the server's identity is checked by the
// client.
func TestMutualTLSIdentity(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	cfg := secureConfig(p.issue(t, "default", "example"))
	cfg.Security.MutualTLS = true
	svc, addr, _ := startSecure(t, cfg)
	ctx := context.Background()

	c := secureClient(t, addr, client.WithTLS(security.TLSConfig{Dir: p.issue(t, "default", "frontend"), MutualTLS: true, ServerIdentity: "default/example", Refresh: security.DefaultRefresh}))
	if _, err := c.SayHello(ctx, &example.Request{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if got := svc.last.Load(); got != "spiffe://cluster.local/ns/default/sa/frontend via certificate" {
		t.Errorf("handler saw caller %v", got)
	}

	noCert := secureClient(t, addr, client.WithTLS(security.TLSConfig{Dir: p.issue(t, "default", "anon"), ServerIdentity: "*", Refresh: security.DefaultRefresh}))
	if _, err := noCert.SayHello(ctx, &example.Request{Name: "x"}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "no client certificate") {
		t.Errorf("client without a certificate: %v, want UNAUTHENTICATED saying so", err)
	}
	other := newPKI(t)
	otherDir := other.issue(t, "default", "frontend")
	os.WriteFile(filepath.Join(otherDir, security.CAFile), p.ca.CertPEM, 0o644) // it trusts the server
	foreign := secureClient(t, addr, client.WithTLS(security.TLSConfig{Dir: otherDir, MutualTLS: true, ServerIdentity: "*", Refresh: security.DefaultRefresh}))
	_, err := foreign.SayHello(ctx, &example.Request{Name: "x"})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "client certificate refused: x509: certificate signed by unknown authority") {
		t.Errorf("client certificate from another CA: %v, want UNAUTHENTICATED naming the unknown authority", err)
	}
	wrongServer := secureClient(t, addr, client.WithTLS(security.TLSConfig{Dir: p.issue(t, "default", "frontend2"), MutualTLS: true, ServerIdentity: "default/payments", Refresh: security.DefaultRefresh}))
	_, err = wrongServer.SayHello(ctx, &example.Request{Name: "x"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not default/payments") {
		t.Errorf("server with another identity: %v, want the client to refuse it", err)
	}
	if n := svc.calls.Load(); n != 1 {
		t.Errorf("%d handlers ran, want 1", n)
	}
}

// reviews answers TokenReviews for tokens "<ns>:<sa>:<audience>"; anything
// else is refused as expired.
func reviews() *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		token := tr.Spec.Token
		if jwt := strings.Split(token, "."); len(jwt) == 3 {
			b, _ := base64.RawURLEncoding.DecodeString(jwt[1])
			var claims struct{ Sub string }
			json.Unmarshal(b, &claims)
			token = claims.Sub
		}
		parts := strings.Split(token, ":")
		if len(parts) != 3 {
			tr.Status.Error = "invalid bearer token, service account token has expired"
			return true, tr, nil
		}
		aud := []string{}
		for _, a := range tr.Spec.Audiences {
			if a == parts[2] {
				aud = append(aud, a)
			}
		}
		if len(aud) == 0 {
			tr.Status.Error = "invalid bearer token, token audiences [" + parts[2] + "] is invalid for the target audiences"
			return true, tr, nil
		}
		tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: aud, User: authnv1.UserInfo{Username: "system:serviceaccount:" + parts[0] + ":" + parts[1]}}
		return true, tr, nil
	})
	return cs
}

// jwtFor is a JWT-shaped token whose sub the fake reviews read as
// "<ns>:<sa>:<audience>", expiring in an hour.
func jwtFor(sub string) string {
	claims := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"exp":%d}`, sub, time.Now().Add(time.Hour).Unix()))
	return "eyJhbGciOiJSUzI1NiJ9." + claims + ".c2ln"
}

// tokenFile writes jwtFor(sub) to a file (grpc-go's token-file
// credentials need a JWT with an exp claim).
func tokenFile(t *testing.T, sub string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(jwtFor(sub)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTokensAndPolicy: callers are identified by reviewed ServiceAccount
// tokens over TLS; the policy allows each method to the callers it names;
// every refusal says why and is counted; health needs no identity.
func TestTokensAndPolicy(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	dir := p.issue(t, "default", "example")
	policy, err := security.ParsePolicy([]byte(`
rules:
- methods: ["/example.ExampleService/SayHello"]
  callers: ["default/frontend"]
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := secureConfig(dir)
	cfg.Security.Audience = "example"
	svc, addr, reg := startSecure(t, cfg, server.WithTokenReviews(reviews().AuthenticationV1().TokenReviews()), server.WithAuthorizer(policy))
	ctx := context.Background()
	c := secureClient(t, addr, client.WithTLS(security.TLSConfig{Dir: dir, ServerIdentity: "default/example", Refresh: security.DefaultRefresh}))
	call := func(token string) error {
		ctx := ctx
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		_, err := c.SayHello(ctx, &example.Request{Name: "x"})
		return err
	}
	if err := call(jwtFor("default:frontend:example")); err != nil {
		t.Fatalf("allowed caller: %v", err)
	}
	if got := svc.last.Load(); got != "spiffe://cluster.local/ns/default/sa/frontend via token" {
		t.Errorf("handler saw caller %v", got)
	}
	for _, tc := range []struct {
		name, token string
		code        codes.Code
		want        string
	}{
		{"no token", "", codes.Unauthenticated, `carries no identity; this server requires a ServiceAccount token for audience "example"`},
		{"expired", jwtFor("expired-token"), codes.Unauthenticated, "token has expired"},
		{"wrong audience", jwtFor("default:frontend:other"), codes.Unauthenticated, "invalid for the target audiences"},
		{"not allowed", jwtFor("default:backend:example"), codes.PermissionDenied, "spiffe://cluster.local/ns/default/sa/backend may not call /example.ExampleService/SayHello"},
		{"not a JWT", "default:frontend:example", codes.Unauthenticated, "it is not a JWT"},
	} {
		err := call(tc.token)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %v saying %q", tc.name, err, tc.code, tc.want)
		}
		if tc.token != "" && strings.Contains(err.Error(), tc.token) {
			t.Errorf("%s: the error quotes the token", tc.name)
		}
	}
	if n := svc.calls.Load(); n != 1 {
		t.Errorf("%d handlers ran, want 1 (the allowed call)", n)
	}
	cc, err := client.Dial("passthrough:///"+addr, client.WithoutMetrics(), client.WithTLS(security.TLSConfig{Dir: dir, ServerIdentity: "*", Refresh: security.DefaultRefresh}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check without identity: %v, %v", r, err)
	}
	denied := testutil.ToFloat64(deniedCounter(t, reg, "unauthenticated")) + testutil.ToFloat64(deniedCounter(t, reg, "permission_denied"))
	if denied != 5 {
		t.Errorf("kuberpc_server_denied_total = %v, want 5", denied)
	}
}

func deniedCounter(t *testing.T, reg *prometheus.Registry, reason string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "kuberpc_server_denied_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" && l.GetValue() == reason {
						ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("x", "x", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
					}
				}
			}
		}
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(f, ch) }
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// TestTokenFileClient: client.WithTokenFile sends the token in the file,
// only over TLS; a missing file is an error at Dial.
func TestTokenFileClient(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	dir := p.issue(t, "default", "example")
	cfg := secureConfig(dir)
	cfg.Security.Audience = "example"
	svc, addr, _ := startSecure(t, cfg, server.WithTokenReviews(reviews().AuthenticationV1().TokenReviews()))
	ctx := context.Background()
	tok := tokenFile(t, "jobs:batch:example")
	c := secureClient(t, addr, client.WithTLS(security.TLSConfig{Dir: dir, ServerIdentity: "default/example", Refresh: security.DefaultRefresh}), client.WithTokenFile(tok))
	if _, err := c.SayHello(ctx, &example.Request{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if got := svc.last.Load(); got != "spiffe://cluster.local/ns/jobs/sa/batch via token" {
		t.Errorf("handler saw caller %v", got)
	}
	if _, err := client.Dial("passthrough:///"+addr, client.WithTokenFile(tok)); err == nil || !strings.Contains(err.Error(), "transport level security") {
		t.Errorf("Dial with a token and no TLS = %v, want it refused (a token sent in the clear can be replayed)", err)
	}
	if _, err := client.Dial("passthrough:///"+addr, client.WithTokenFile(filepath.Join(t.TempDir(), "missing"))); err == nil || !strings.Contains(err.Error(), "token file") {
		t.Errorf("Dial with a missing token file = %v, want an error naming it", err)
	}
}

// TestSecurityConfigErrors: inconsistent or unreadable security settings
// are refused at New, naming the setting and the file.
func TestSecurityConfigErrors(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	good := p.issue(t, "default", "example")
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, security.CertFile), []byte("not a cert"), 0o644)
	os.WriteFile(filepath.Join(bad, security.KeyFile), []byte("not a key"), 0o600)
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte("rules: [{methods: [SayHello], callers: ['*']}]"), 0o644)
	anyCaller := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(anyCaller, []byte("rules: [{methods: ['*'], callers: ['*']}]"), 0o644)
	for _, tc := range []struct {
		name string
		set  func(*server.Security)
		want string
	}{
		{"mtls without dir", func(s *server.Security) { s.MutualTLS = true }, "TLS_CLIENT_AUTH"},
		{"audience without tls", func(s *server.Security) { s.Audience = "x" }, "AUTH_AUDIENCE"},
		{"missing dir", func(s *server.Security) { s.TLSDir = "/nonexistent" }, "/nonexistent/tls.crt"},
		{"bad pem", func(s *server.Security) { s.TLSDir = bad }, "tls.crt"},
		{"mtls without ca", func(s *server.Security) { s.TLSDir = bad; s.MutualTLS = true }, "ca.crt"},
		{"bad policy", func(s *server.Security) { s.TLSDir = good; s.MutualTLS = true; s.PolicyFile = policy }, `AUTHZ_POLICY`},
		{"missing policy", func(s *server.Security) { s.PolicyFile = "/nonexistent.yaml" }, "/nonexistent.yaml"},
		{"zero refresh", func(s *server.Security) { s.TLSRefresh = 0 }, "TLS_REFRESH"},
		{"audience outside a pod", func(s *server.Security) { s.TLSDir = good; s.Audience = "x" }, "not in a pod"},
		// No caller could be identified, so every call but health checks
		// would fail UNAUTHENTICATED (before, the server started so).
		{"policy without identity", func(s *server.Security) { s.Policy = "rules: [{methods: ['*'], callers: ['*']}]" }, "AUTHZ_POLICY_INLINE: no caller can be identified"},
		{"policy over tls without identity", func(s *server.Security) { s.TLSDir = good; s.PolicyFile = anyCaller }, "AUTHZ_POLICY: no caller can be identified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := quickDrain()
			tc.set(&cfg.Security)
			_, err := server.New(server.WithConfig(cfg), server.WithRegistry(prometheus.NewRegistry()))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// TestExpiredCertificateGivesWayToTheRenewedOne: server and client start
// with certificates that have expired and re-read their files only every
// hour; the node agent (here, the test) then writes renewed ones. The
// next handshake uses them on both sides rather than failing with
// "certificate has expired" until the hour is up; before the fix it
// failed so (the flake of the e2e mTLS test: 3 s certificates, 10 s
// refresh).
func TestExpiredCertificateGivesWayToTheRenewedOne(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	expired := func(ns, name string) string {
		dir := filepath.Join(p.dir, ns+"-"+name)
		if _, err := p.ca.IssueDir(dir, "spiffe://cluster.local/ns/"+ns+"/sa/"+name, -time.Second); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	srvDir, cliDir := expired("default", "example"), expired("default", "frontend")
	cfg := secureConfig(srvDir)
	cfg.Security.MutualTLS = true
	cfg.Security.TLSRefresh = time.Hour
	svc, addr, _ := startSecure(t, cfg)
	c := secureClient(t, addr, client.WithTLS(security.TLSConfig{Dir: cliDir, MutualTLS: true, ServerIdentity: "default/example", Refresh: time.Hour}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.SayHello(ctx, &example.Request{Name: "x"}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("with expired certificates: %v, want an error naming the expiry", err)
	}
	p.reissue(t, srvDir, "default", "example")
	p.reissue(t, cliDir, "default", "frontend")
	time.Sleep(1100 * time.Millisecond) // the files are re-read at most once a second while expired
	if _, err := c.SayHello(ctx, &example.Request{Name: "x"}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("with renewed certificates on disk: %v", err)
	}
	if got := svc.last.Load(); got != "spiffe://cluster.local/ns/default/sa/frontend via certificate" {
		t.Errorf("handler saw caller %v", got)
	}
}

// TestCertificateRotationUnderLoad: server and client certificates are
// replaced every 100 ms, 30 times and more, while calls run on a
// long-lived connection and on fresh ones: no call fails, the long-lived
// connection keeps the session it began with, and fresh connections get
// the new certificates.
func TestCertificateRotationUnderLoad(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srvDir, cliDir := p.issue(t, "default", "example"), p.issue(t, "default", "frontend")
	cfg := secureConfig(srvDir)
	cfg.Security.MutualTLS = true
	cfg.Security.TLSRefresh = 20 * time.Millisecond
	svc, addr, _ := startSecure(t, cfg)
	tlsCfg := security.TLSConfig{Dir: cliDir, MutualTLS: true, ServerIdentity: "default/example", Refresh: 20 * time.Millisecond}
	long := secureClient(t, addr, client.WithTLS(tlsCfg))
	ctx := context.Background()
	serial := func(c example.ExampleServiceClient) (string, error) {
		var pr peer.Peer
		_, err := c.SayHello(ctx, &example.Request{Name: "x"}, grpc.Peer(&pr))
		if err != nil {
			return "", err
		}
		ti, ok := pr.AuthInfo.(credentials.TLSInfo)
		if !ok || len(ti.State.PeerCertificates) == 0 {
			return "", fmt.Errorf("no TLS peer certificate (%T)", pr.AuthInfo)
		}
		return ti.State.PeerCertificates[0].SerialNumber.String(), nil
	}
	first, err := serial(long)
	if err != nil {
		t.Fatal(err)
	}
	const rotations = 30
	stop := make(chan struct{})
	var failed, calls atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				if s, err := serial(long); err != nil || s != first {
					failed.Add(1)
					t.Errorf("long-lived connection: serial %s (began with %s), %v", s, first, err)
				}
			}
		}()
	}
	seen := map[string]bool{}
	for i := range rotations {
		p.reissue(t, srvDir, "default", "example")
		p.reissue(t, cliDir, "default", "frontend")
		time.Sleep(100 * time.Millisecond)
		// A fresh connection handshakes with the certificates of now.
		fresh, err := client.Dial("passthrough:///"+addr, client.WithoutMetrics(), client.WithTLS(tlsCfg))
		if err != nil {
			t.Fatal(err)
		}
		s, err := serial(example.NewExampleServiceClient(fresh))
		fresh.Close()
		calls.Add(1)
		if err != nil {
			failed.Add(1)
			t.Errorf("fresh connection after rotation %d: %v", i+1, err)
		}
		seen[s] = true
	}
	close(stop)
	wg.Wait()
	t.Logf("%d rotations, %d calls, %d failed; fresh connections saw %d server certificates", rotations, calls.Load(), failed.Load(), len(seen))
	if failed.Load() != 0 {
		t.Errorf("%d calls failed during rotation", failed.Load())
	}
	if len(seen) < rotations/2 || seen[first] {
		t.Errorf("fresh connections saw %d distinct server certificates over %d rotations (first one again: %v); want new ones", len(seen), rotations, seen[first])
	}
	if svc.calls.Load() < int32(calls.Load()) {
		t.Errorf("handlers ran %d times for %d calls", svc.calls.Load(), calls.Load())
	}
}

// TestStalledUnaryReaderIsClosedOverTLS: as TestStalledUnaryReadersAreClosed,
// through TLS, where the server finds a reply's connection from the peer
// grpc-go gives the handler (the TLS connection's remote address is its
// TCP connection's).
func TestStalledUnaryReaderIsClosedOverTLS(t *testing.T) {
	t.Parallel()
	cfg := secureConfig(newPKI(t).issue(t, "default", "server"))
	cfg.Limits.StalledWriteTimeout = time.Second
	_, addr, _ := startSecure(t, cfg)
	// The server's identity is not what is tested here.
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	stalled := newH2(t, c, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	leaveUnread(t, stalled, &example.Request{Name: strings.Repeat("n", 64<<10)})
	select {
	case <-stalled.done:
	case <-time.After(10 * time.Second):
		t.Error("the TLS connection that read none of its 8 replies of 64 KiB is open 10s in; want it closed after STALLED_WRITE_TIMEOUT=1s")
	}
}
