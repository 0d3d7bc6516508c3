package security

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestParseSPIFFEID(t *testing.T) {
	t.Parallel()
	good := map[string]Caller{
		"spiffe://cluster.local/ns/default/sa/frontend": {TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "frontend"},
		"spiffe://td.example/ns/a-b/sa/x.y-z":           {TrustDomain: "td.example", Namespace: "a-b", ServiceAccount: "x.y-z"},
	}
	for id, want := range good {
		got, err := ParseSPIFFEID(id)
		if err != nil || got != want {
			t.Errorf("ParseSPIFFEID(%q) = %+v, %v; want %+v", id, got, err, want)
		}
		if got.SPIFFEID() != id {
			t.Errorf("SPIFFEID() = %q, want %q", got.SPIFFEID(), id)
		}
	}
	for _, id := range []string{
		"", "spiffe://", "https://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b/c",
		"spiffe://cluster.local/ns/a/sa/", "spiffe://cluster.local/ns//sa/b", "spiffe://cluster.local/sa/b/ns/a",
		"spiffe://cluster.local/ns/A/sa/b", "spiffe://cluster.local/ns/a.b/sa/c", "spiffe://cluster.local/ns/a/sa/b?x",
		"spiffe://cluster.local/ns/a/sa/b#f", "spiffe://u@cluster.local/ns/a/sa/b", "spiffe://cluster.local:1/ns/a/sa/b",
		"spiffe://cluster.local/ns/-a/sa/b", "spiffe://cluster.local/ns/a/sa/b..c", "spiffe://cluster.local/ns/a/sa/" + strings.Repeat("x", 254),
	} {
		if c, err := ParseSPIFFEID(id); err == nil {
			t.Errorf("ParseSPIFFEID(%q) = %+v, want an error", id, c)
		}
	}
}

func TestParseServiceAccountUser(t *testing.T) {
	t.Parallel()
	if ns, sa, err := ParseServiceAccountUser("system:serviceaccount:default:frontend"); err != nil || ns != "default" || sa != "frontend" {
		t.Errorf("= %q, %q, %v", ns, sa, err)
	}
	for _, u := range []string{"", "admin", "system:serviceaccount:default", "system:serviceaccount::x", "system:serviceaccount:a:b:c", "system:node:n1"} {
		if _, _, err := ParseServiceAccountUser(u); err == nil {
			t.Errorf("ParseServiceAccountUser(%q) succeeded", u)
		}
	}
}

func TestParsePolicyErrorsNameTheRule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, policy, want string }{
		{"empty", ``, "no rules"},
		{"unknown field", `rules: [{methods: ["*"], callers: ["*"], allow: true}]`, "unknown field"},
		{"no methods", `rules: [{callers: ["*"]}]`, "rules[0]: no methods"},
		{"no callers", `rules: [{methods: ["*"]}]`, "rules[0]: no callers"},
		{"method without slash", `rules: [{methods: ["example.ExampleService/SayHello"], callers: ["*"]}]`, `rules[0]: methods: "example.ExampleService/SayHello"`},
		{"method with extra slash", `rules: [{methods: ["/a.B/C/D"], callers: ["*"]}]`, `"/a.B/C/D"`},
		{"bad caller", `rules: [{methods: ["*"], callers: ["default"]}, {methods: ["*"], callers: ["Default/x"]}]`, `rules[1]: callers: "Default/x"`},
		{"bad spiffe", `rules: [{methods: ["*"], callers: ["spiffe://td/ns/a"]}]`, "does not name a ServiceAccount"},
		{"not yaml", `rules: [`, "authorization policy"},
		{"callers twice, in two cases", `rules: [{methods: ["*"], callers: ["default/a"], Callers: ["*"]}]`, `unknown field "rules[0].Callers": field names are case-sensitive, did you mean "callers"?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tc.policy))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParsePolicy = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	t.Parallel()
	a, err := ParsePolicy([]byte(`
rules:
- methods: ["/example.ExampleService/SayHello"]
  callers: ["default/frontend", "spiffe://other.td/ns/jobs/sa/batch"]
- methods: ["/example.StreamService/*"]
  callers: ["monitoring/*"]
- methods: ["*"]
  callers: ["admin/root"]
`))
	if err != nil {
		t.Fatal(err)
	}
	c := func(td, ns, sa string) Caller { return Caller{TrustDomain: td, Namespace: ns, ServiceAccount: sa} }
	for _, tc := range []struct {
		caller Caller
		method string
		want   bool
	}{
		{c("cluster.local", "default", "frontend"), "/example.ExampleService/SayHello", true},
		{c("other.td", "default", "frontend"), "/example.ExampleService/SayHello", true}, // namespace/name pins no trust domain
		{c("cluster.local", "default", "frontend"), "/example.StreamService/Chat", false},
		{c("cluster.local", "default", "backend"), "/example.ExampleService/SayHello", false},
		{c("other.td", "jobs", "batch"), "/example.ExampleService/SayHello", true},
		{c("cluster.local", "jobs", "batch"), "/example.ExampleService/SayHello", false}, // the SPIFFE ID pins it
		{c("cluster.local", "monitoring", "x"), "/example.StreamService/Chat", true},
		{c("cluster.local", "monitoring", "x"), "/example.ExampleService/SayHello", false},
		{c("cluster.local", "admin", "root"), "/anything.At/All", true},
		// Paths grpc-go routes elsewhere never match another method's rule.
		{c("cluster.local", "default", "frontend"), "/example.ExampleService/SayHello/", false},
		{c("cluster.local", "default", "frontend"), "//example.ExampleService/SayHello", false},
		{c("cluster.local", "default", "frontend"), "example.ExampleService/SayHello", false},
		{c("cluster.local", "monitoring", "x"), "/example.StreamService/Chat/../../example.ExampleService/SayHello", false},
		{c("cluster.local", "monitoring", "x"), "/example.ExampleService/SayHello/example.StreamService/Chat", false},
		{c("cluster.local", "monitoring", "x"), "example.StreamService/Chat", false},
	} {
		if got := a.Allowed(tc.caller, tc.method); got != tc.want {
			t.Errorf("Allowed(%s, %q) = %v, want %v", tc.caller, tc.method, got, tc.want)
		}
	}
	ns, anyNS := a.Policy().Namespaces()
	if strings.Join(ns, ",") != "default,jobs,monitoring,admin" || anyNS {
		t.Errorf("Namespaces() = %v, %v", ns, anyNS)
	}
}

// fakeToken is a JWT-shaped token (the reviewer only reads its exp).
func fakeToken(name string, exp time.Time) string {
	claims := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"exp":%d}`, name, exp.Unix()))
	return "eyJhbGciOiJSUzI1NiJ9." + claims + ".sig"
}

// reviewsFake answers TokenReviews: tokens whose sub starts with "sa:" are
// that ServiceAccount, for the audiences asked, except "wrongaud"; "down"
// fails the request.
func reviewsFake(count *atomic.Int32) *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		count.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		parts := strings.Split(tr.Spec.Token, ".")
		b, _ := base64.RawURLEncoding.DecodeString(parts[1])
		switch sub := string(b); {
		case strings.Contains(sub, `"down"`):
			return true, nil, errors.New("connection refused")
		case strings.Contains(sub, `"sa:`):
			user := strings.Split(strings.Split(sub, `"sa:`)[1], `"`)[0]
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
				User: authnv1.UserInfo{Username: "system:serviceaccount:" + user}}
			if strings.Contains(sub, "wrongaud") {
				tr.Status.Audiences = []string{"https://kubernetes.default.svc"}
			}
		case strings.Contains(sub, `"user"`):
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences, User: authnv1.UserInfo{Username: "admin"}}
		default:
			tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token, token has expired"}
		}
		return true, tr, nil
	})
	return cs
}

func TestTokenReviewer(t *testing.T) {
	t.Parallel()
	var asked atomic.Int32
	r, err := NewTokenReviewer(reviewsFake(&asked).AuthenticationV1().TokenReviews(), "example", "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	good := fakeToken("sa:default:frontend", now.Add(time.Hour))
	for range 5 {
		c, err := r.Review(ctx, good)
		if err != nil || c != (Caller{Namespace: "default", ServiceAccount: "frontend", TrustDomain: DefaultTrustDomain, Source: SourceToken}) {
			t.Fatalf("Review = %+v, %v", c, err)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("5 calls with one token asked the API server %d times, want 1 (cached)", n)
	}
	now = now.Add(11 * time.Second)
	r.Review(ctx, good)
	if n := asked.Load(); n != 2 {
		t.Errorf("after the TTL the API server was asked %d times in all, want 2", n)
	}
	// A token expiring sooner than the TTL is cached only until it expires.
	short := fakeToken("sa:default:short", now.Add(2*time.Second))
	r.Review(ctx, short)
	now = now.Add(3 * time.Second)
	r.Review(ctx, short)
	if n := asked.Load(); n != 4 {
		t.Errorf("a token past its exp was served from the cache (%d reviews, want 4)", n)
	}
	for _, tc := range []struct{ token, want string }{
		{fakeToken("expired", now), "the API server refused it: invalid bearer token, token has expired"},
		{fakeToken("sa:default:wrongaud", now.Add(time.Hour)), `not for audience "example"`},
		{fakeToken("user", now.Add(time.Hour)), `user "admin" is not a ServiceAccount`},
		{strings.Repeat("x", MaxTokenSize+1), "more than 16384"},
	} {
		_, err := r.Review(ctx, tc.token)
		if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Review = %v, want ErrInvalidToken saying %q", err, tc.want)
		}
		if strings.Contains(fmt.Sprint(err), tc.token) {
			t.Errorf("the error quotes the token")
		}
	}
	down := fakeToken("down", now.Add(time.Hour))
	before := asked.Load()
	for range 2 {
		if _, err := r.Review(ctx, down); err == nil || errors.Is(err, ErrInvalidToken) {
			t.Errorf("Review with the API server down = %v, want an error that is not ErrInvalidToken", err)
		}
	}
	if asked.Load()-before != 2 {
		t.Errorf("a failed review was cached")
	}
}

func TestTokenReviewerTTLZeroAsksEveryTime(t *testing.T) {
	t.Parallel()
	var asked atomic.Int32
	r, err := NewTokenReviewer(reviewsFake(&asked).AuthenticationV1().TokenReviews(), "example", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	tok := fakeToken("sa:default:frontend", time.Now().Add(time.Hour))
	for range 3 {
		if _, err := r.Review(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := asked.Load(); n != 3 {
		t.Errorf("TTL 0: %d reviews for 3 calls, want 3", n)
	}
	if _, err := NewTokenReviewer(nil, "", "", 0); err == nil {
		t.Error("NewTokenReviewer without an audience succeeded")
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	if tok, ok, err := BearerToken([]string{"Bearer abc"}); tok != "abc" || !ok || err != nil {
		t.Errorf("= %q %v %v", tok, ok, err)
	}
	if _, ok, err := BearerToken(nil); ok || err != nil {
		t.Errorf("no header = %v %v", ok, err)
	}
	for _, v := range [][]string{{"Basic abc"}, {"Bearer"}, {"Bearer  "}, {"abc"}, {"Bearer a", "Bearer b"}} {
		if _, _, err := BearerToken(v); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("BearerToken(%q) = %v, want ErrInvalidToken", v, err)
		}
	}
}
