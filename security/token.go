package security

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
)

// MaxTokenSize bounds the bearer token a server reviews; ServiceAccount
// tokens are about 1 KiB.
const MaxTokenSize = 16 << 10

// ErrInvalidToken wraps every reason a token is refused: the API server
// did not authenticate it, it is not for this server's audience, or it
// does not belong to a ServiceAccount. The message says which; it never
// contains the token.
var ErrInvalidToken = errors.New("invalid ServiceAccount token")

// TokenReviewer authenticates ServiceAccount tokens for one audience
// with the Kubernetes TokenReview API. A result is cached for at most
// TTL (and never past the token's expiry), a refusal for a second, so a
// busy server asks the API server about each caller's token rarely; the
// cache is keyed by the token's SHA-256 and bounded. The server needs
// RBAC to create tokenreviews (the ClusterRole system:auth-delegator).
type TokenReviewer struct {
	reviews     authnclient.TokenReviewInterface
	audience    string
	trustDomain string
	ttl         time.Duration
	now         func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]*review
}

// review is one cached or in-progress TokenReview.
type review struct {
	done    chan struct{} // closed when caller and err are set
	caller  Caller
	err     error
	expires time.Time
}

// maxCachedReviews bounds the review cache.
const maxCachedReviews = 4096

// negativeTTL is how long a refused token stays refused without asking
// the API server again.
const negativeTTL = time.Second

// NewTokenReviewer returns a TokenReviewer that accepts tokens whose
// audiences include audience, reviewed through reviews, trusted for ttl
// (0: every call is reviewed; concurrent calls with one token still
// share a review). Identities get trustDomain (empty means
// DefaultTrustDomain).
func NewTokenReviewer(reviews authnclient.TokenReviewInterface, audience, trustDomain string, ttl time.Duration) (*TokenReviewer, error) {
	if audience == "" {
		return nil, errors.New("token review: an audience is required (a token for any audience could be replayed from another service)")
	}
	if ttl < 0 {
		return nil, fmt.Errorf("token review: TTL %v is negative", ttl)
	}
	r := &TokenReviewer{reviews: reviews, audience: audience, ttl: ttl, now: time.Now, cache: map[[32]byte]*review{}}
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	r.trustDomain = trustDomain
	return r, nil
}

// Review returns the ServiceAccount whose token this is. Errors wrapping
// ErrInvalidToken mean the token is refused; others mean the API server
// could not be asked (not the caller's fault; not cached).
func (r *TokenReviewer) Review(ctx context.Context, token string) (Caller, error) {
	if len(token) > MaxTokenSize {
		return Caller{}, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidToken, len(token), MaxTokenSize)
	}
	key := sha256.Sum256([]byte(token))
	now := r.now()
	r.mu.Lock()
	rv, ok := r.cache[key]
	if ok {
		select {
		case <-rv.done:
			if now.After(rv.expires) {
				ok = false
			}
		default: // another call is asking; wait for it
		}
	}
	if !ok {
		if len(r.cache) >= maxCachedReviews {
			r.evictLocked(now)
		}
		rv = &review{done: make(chan struct{})}
		r.cache[key] = rv
		r.mu.Unlock()
		rv.caller, rv.err, rv.expires = r.ask(ctx, token, now)
		close(rv.done)
		if rv.err != nil && !errors.Is(rv.err, ErrInvalidToken) {
			r.mu.Lock()
			if r.cache[key] == rv {
				delete(r.cache, key)
			}
			r.mu.Unlock()
		}
		return rv.caller, rv.err
	}
	r.mu.Unlock()
	select {
	case <-rv.done:
		return rv.caller, rv.err
	case <-ctx.Done():
		return Caller{}, ctx.Err()
	}
}

// evictLocked drops expired reviews, and every finished one if that is
// not enough.
func (r *TokenReviewer) evictLocked(now time.Time) {
	for k, rv := range r.cache {
		select {
		case <-rv.done:
			if now.After(rv.expires) {
				delete(r.cache, k)
			}
		default:
		}
	}
	if len(r.cache) < maxCachedReviews {
		return
	}
	for k, rv := range r.cache {
		select {
		case <-rv.done:
			delete(r.cache, k)
		default:
		}
	}
}

// ask sends the TokenReview.
func (r *TokenReviewer) ask(ctx context.Context, token string, now time.Time) (Caller, error, time.Time) {
	tr, err := r.reviews.Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{r.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Caller{}, fmt.Errorf("token review: %w", err), time.Time{}
	}
	refused := func(format string, a ...any) (Caller, error, time.Time) {
		return Caller{}, fmt.Errorf("%w: "+format, append([]any{ErrInvalidToken}, a...)...), now.Add(negativeTTL)
	}
	st := tr.Status
	if !st.Authenticated {
		why := st.Error
		if why == "" {
			why = "not authenticated"
		}
		return refused("the API server refused it: %s", why)
	}
	if !slices.Contains(st.Audiences, r.audience) {
		return refused("it is not for audience %q (its audiences: %s)", r.audience, strings.Join(st.Audiences, ", "))
	}
	ns, sa, err := ParseServiceAccountUser(st.User.Username)
	if err != nil {
		return refused("%v", err)
	}
	expires := now.Add(r.ttl)
	if exp, ok := tokenExpiry(token); ok && exp.Before(expires) {
		expires = exp
	}
	return Caller{Namespace: ns, ServiceAccount: sa, TrustDomain: r.trustDomain, Source: SourceToken}, nil, expires
}

// tokenExpiry reads the exp claim of a JWT the API server has already
// authenticated, to cache it no longer than it is valid.
func tokenExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(int64(*claims.Exp), 0), true
}

// BearerToken returns the token of an authorization metadata value,
// "Bearer <token>", and false when there is none.
func BearerToken(values []string) (string, bool, error) {
	switch len(values) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, fmt.Errorf("%w: %d authorization headers, want one", ErrInvalidToken, len(values))
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false, fmt.Errorf("%w: the authorization header is not \"Bearer <token>\"", ErrInvalidToken)
	}
	return strings.TrimSpace(token), true, nil
}
