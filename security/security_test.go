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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
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
		var b []byte
		if parts := strings.Split(tr.Spec.Token, "."); len(parts) == 3 {
			b, _ = base64.RawURLEncoding.DecodeString(parts[1])
		}
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

// jwtWith is a token whose claims are the JSON claims, unsigned.
func jwtWith(claims string) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".sig"
}

// stoppedReviewer is a TokenReviewer for audience "example", trusting a
// review for a minute, that asks reviewsFake (counting in asked) and
// whose clock stays at now.
func stoppedReviewer(t *testing.T) (r *TokenReviewer, asked *atomic.Int32, now time.Time) {
	t.Helper()
	asked = new(atomic.Int32)
	r, err := NewTokenReviewer(reviewsFake(asked).AuthenticationV1().TokenReviews(), "example", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now = time.Unix(1_000_000, 0)
	r.now = func() time.Time { return now }
	return r, asked, now
}

// TestTokenReviewerRefusesWithoutAsking: a token the API server would
// refuse for what it says of itself is refused, saying why, without a
// review (which a caller with no token of its own could otherwise send
// the API server as fast as it likes), and is not cached; a token it
// cannot judge that way is asked about.
func TestTokenReviewerRefusesWithoutAsking(t *testing.T) {
	t.Parallel()
	r, asked, _ := stoppedReviewer(t)
	for _, tc := range []struct{ token, want string }{
		{"opaque-token", "it is not a JWT"},
		{"a.b.c.d", "it is not a JWT"},
		{"a.!!!.c", "its claims are not base64url-encoded JSON"},
		{jwtWith(`[1, 2]`), "its claims are not base64url-encoded JSON"},
		{jwtWith(`{"sub":"sa:default:frontend","exp":"soon"}`), "its exp claim is not a number"},
		{jwtWith(`{"sub":"sa:default:frontend","exp":999000}`), "it expired at 1970-01-12T13:30:00Z"},
		{jwtWith(`{"sub":"sa:default:frontend","aud":"other"}`), `it is not for audience "example" (its audiences: other)`},
		{jwtWith(`{"sub":"sa:default:frontend","aud":["a","b"]}`), `(its audiences: a, b)`},
		{jwtWith(`{"sub":"sa:default:frontend","aud":7}`), "its aud claim is neither a string nor an array of strings"},
	} {
		for range 2 {
			_, err := r.Review(context.Background(), tc.token)
			if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%.40s: %v; want ErrInvalidToken saying %q", tc.token, err, tc.want)
			}
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the API server was asked %d times about tokens it would refuse anyway; want 0", n)
	}
	if n := len(r.cache); n != 0 {
		t.Errorf("%d refusals cached; want none (a flood of them would evict the reviews of real callers)", n)
	}
	// Within the leeway, for this audience among others, with "EXP"
	// (not exp), or with no exp or aud at all: the API server decides.
	for _, claims := range []string{
		`{"sub":"sa:default:a","exp":999800}`,
		`{"sub":"sa:default:b","aud":["other","example"],"exp":1000100}`,
		`{"sub":"sa:default:c","EXP":1}`,
		`{"sub":"sa:default:d"}`,
	} {
		if _, err := r.Review(context.Background(), jwtWith(claims)); err != nil {
			t.Errorf("%s: %v; want it reviewed and accepted", claims, err)
		}
	}
	if n := asked.Load(); n != 4 {
		t.Errorf("%d reviews of 4 tokens the claims cannot refuse; want 4", n)
	}
}

// TestForgedTokensDoNotEvictReviewedOnes: a caller with no token of its
// own sends more JWT-shaped tokens than the cache holds, each refused by
// the API server. The tokens already reviewed and accepted must still be
// served from the cache, as the TokenReviewer's doc promises. Before,
// a full cache dropped every finished review, accepted ones too, so each
// caller's next call waited on a review again (10 more here), behind the
// forged ones' reviews in flight.
func TestForgedTokensDoNotEvictReviewedOnes(t *testing.T) {
	t.Parallel()
	r, asked, now := stoppedReviewer(t)
	ctx := context.Background()
	var good []string
	for i := range 10 {
		good = append(good, fakeToken(fmt.Sprintf("sa:default:caller%d", i), now.Add(time.Hour)))
		if _, err := r.Review(ctx, good[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range maxCachedReviews + 100 {
		if _, err := r.Review(ctx, fakeToken(fmt.Sprintf("forged-%d", i), now.Add(time.Hour))); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("forged token %d: %v; want it refused", i, err)
		}
	}
	before := asked.Load()
	for _, tok := range good {
		if _, err := r.Review(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := asked.Load() - before; n != 0 {
		t.Errorf("after %d forged tokens, the 10 callers reviewed before were reviewed again %d times; want 0 (served from the cache)", maxCachedReviews+100, n)
	}
	if len(r.cache) > maxCachedReviews {
		t.Errorf("the cache holds %d reviews; want at most %d", len(r.cache), maxCachedReviews)
	}
	// Accepted tokens alone past the bound: the cache stays bounded.
	for i := range maxCachedReviews + 1 {
		if _, err := r.Review(ctx, fakeToken(fmt.Sprintf("sa:default:many%d", i), now.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(r.cache); n > maxCachedReviews || n < maxCachedReviews/2 {
		t.Errorf("after %d accepted tokens the cache holds %d reviews; want %d-%d", maxCachedReviews+1, n, maxCachedReviews/2, maxCachedReviews)
	}
}

// blockingReviews accepts every token as ServiceAccount default/X, X
// the token's last 8 characters; every review but the first waits for
// release. (The fake clientset runs one reactor at a time.)
type blockingReviews struct {
	authnclient.TokenReviewInterface
	asked   atomic.Int32
	release chan struct{}
}

func (b *blockingReviews) Create(_ context.Context, tr *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	if b.asked.Add(1) > 1 {
		<-b.release
	}
	tr = tr.DeepCopy()
	tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
		User: authnv1.UserInfo{Username: "system:serviceaccount:default:" + tr.Spec.Token[len(tr.Spec.Token)-8:]}}
	return tr, nil
}

// TestTokenReviewerBoundsReviewsInFlight: with MaxReviewsInFlight
// reviews waiting on the API server, a new token is refused at once as
// not the caller's fault (UNAVAILABLE at the server), instead of queueing
// behind them; a token already reviewed is still served from the cache;
// and once the reviews end, new ones are asked again.
func TestTokenReviewerBoundsReviewsInFlight(t *testing.T) {
	t.Parallel()
	reviews := &blockingReviews{release: make(chan struct{})}
	r, err := NewTokenReviewer(reviews, "example", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	token := func(i int) string { return jwtWith(fmt.Sprintf(`{"n":%d}`, i)) + fmt.Sprintf(".c%07d", i)[1:] }
	ctx := context.Background()
	if _, err := r.Review(ctx, token(0)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, MaxReviewsInFlight)
	for i := 1; i <= MaxReviewsInFlight; i++ {
		go func() {
			_, err := r.Review(ctx, token(i))
			done <- err
		}()
	}
	for reviews.asked.Load() < 1+MaxReviewsInFlight {
		time.Sleep(time.Millisecond)
	}
	_, err = r.Review(ctx, token(1000))
	if err == nil || errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "reviews already in flight") {
		t.Errorf("a new token with %d reviews in flight: %v; want a refusal that is not ErrInvalidToken, saying why", MaxReviewsInFlight, err)
	}
	if c, err := r.Review(ctx, token(0)); err != nil || c.ServiceAccount == "" {
		t.Errorf("a reviewed token during the reviews: %+v, %v; want it served from the cache", c, err)
	}
	close(reviews.release)
	for range MaxReviewsInFlight {
		if err := <-done; err != nil {
			t.Errorf("a review in flight: %v", err)
		}
	}
	if _, err := r.Review(ctx, token(1000)); err != nil {
		t.Errorf("the refused token after the reviews ended: %v; want it reviewed (the refusal was not cached)", err)
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
