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
//
// A caller without a token of its own must not be able to keep the API
// server busy, or the reviews of the callers that have one waiting: a
// token the API server would refuse for what it says of itself (not a
// JWT, which every ServiceAccount token is; expired; for another
// audience) is refused without asking, and not cached; and at most
// MaxReviewsInFlight reviews are asked at once, beyond which a new token
// is refused as UNAVAILABLE (the client retries, on another replica)
// instead of queueing. Tokens already reviewed are served from the cache
// all the while: a full cache drops expired reviews and refusals first,
// so refused tokens, however many, never push an accepted one out.
type TokenReviewer struct {
	reviews     authnclient.TokenReviewInterface
	audience    string
	trustDomain string
	ttl         time.Duration
	now         func() time.Time
	inFlight    chan struct{} // a slot per review being asked

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

// MaxReviewsInFlight bounds the TokenReviews a TokenReviewer asks at once.
const MaxReviewsInFlight = 64

// expiryLeeway is how long past its exp a token is still sent to the API
// server: it allows a minute itself (go-jose's leeway), and its clock may
// be a little behind this one's.
const expiryLeeway = 5 * time.Minute

// errReviewsBusy refuses a token while MaxReviewsInFlight reviews are
// being asked: not the caller's fault, not cached.
var errReviewsBusy = fmt.Errorf("token review: %d reviews already in flight; retry", MaxReviewsInFlight)

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
	r := &TokenReviewer{reviews: reviews, audience: audience, ttl: ttl, now: time.Now, cache: map[[32]byte]*review{},
		inFlight: make(chan struct{}, MaxReviewsInFlight)}
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
	rv := r.usableLocked(key, now)
	r.mu.Unlock()
	if rv == nil {
		// Read only for a token not in the cache: a cached one costs no
		// decoding.
		exp, err := r.precheck(token, now)
		if err != nil {
			return Caller{}, err
		}
		r.mu.Lock()
		if rv = r.usableLocked(key, now); rv != nil {
			r.mu.Unlock() // another call began asking meanwhile
		} else {
			if len(r.cache) >= maxCachedReviews {
				r.evictLocked(now)
			}
			rv = &review{done: make(chan struct{})}
			r.cache[key] = rv
			r.mu.Unlock()
			r.start(ctx, key, rv, token, exp, now)
			return rv.caller, rv.err
		}
	}
	select {
	case <-rv.done:
		return rv.caller, rv.err
	case <-ctx.Done():
		return Caller{}, ctx.Err()
	}
}

// usableLocked returns the review of key to use: one being asked, or a
// finished one that has not expired; nil when there is none.
func (r *TokenReviewer) usableLocked(key [32]byte, now time.Time) *review {
	rv := r.cache[key]
	if rv == nil {
		return nil
	}
	select {
	case <-rv.done:
		if now.After(rv.expires) {
			return nil
		}
	default: // another call is asking; wait for it
	}
	return rv
}

// start asks the API server for review rv of token, in a slot of
// inFlight, or refuses it when every slot is taken; an error that is not
// the token's fault leaves the cache.
func (r *TokenReviewer) start(ctx context.Context, key [32]byte, rv *review, token string, exp, now time.Time) {
	select {
	case r.inFlight <- struct{}{}:
		rv.caller, rv.err, rv.expires = r.ask(ctx, token, exp, now)
		<-r.inFlight
	default:
		rv.err = errReviewsBusy
	}
	close(rv.done)
	if rv.err != nil && !errors.Is(rv.err, ErrInvalidToken) {
		r.mu.Lock()
		if r.cache[key] == rv {
			delete(r.cache, key)
		}
		r.mu.Unlock()
	}
}

// evictLocked makes room in a full cache: it drops the expired reviews,
// then the refusals (a caller with no token of its own can make as many
// as it likes, so they must never push out an accepted token), and only
// when accepted tokens alone fill the cache, half of them.
func (r *TokenReviewer) evictLocked(now time.Time) {
	done := func(rv *review) bool {
		select {
		case <-rv.done:
			return true
		default: // being asked: its callers wait on it
			return false
		}
	}
	for _, drop := range []func(*review) bool{
		func(rv *review) bool { return now.After(rv.expires) },
		func(rv *review) bool { return rv.err != nil },
	} {
		for k, rv := range r.cache {
			if done(rv) && drop(rv) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) < maxCachedReviews {
			return
		}
	}
	for k, rv := range r.cache {
		if len(r.cache) <= maxCachedReviews/2 {
			return
		}
		if done(rv) {
			delete(r.cache, k)
		}
	}
}

// precheck refuses (wrapping ErrInvalidToken), from what a token says
// of itself before the API server has checked its signature, a token the
// API server would refuse too: one that is not a JWT, has expired, or is
// for other audiences than this reviewer's; it never accepts one. A
// token without exp or aud claims is left to the API server. It returns
// the exp claim (zero without one), to cache a review no longer than the
// token is valid.
func (r *TokenReviewer) precheck(token string, now time.Time) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, fmt.Errorf("%w: it is not a JWT (three parts separated by dots), as every ServiceAccount token is", ErrInvalidToken)
	}
	// Exact names, as the API server reads them (encoding/json would also
	// take "EXP" into a field named Exp).
	var claims map[string]json.RawMessage
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		return time.Time{}, fmt.Errorf("%w: its claims are not base64url-encoded JSON, as a JWT's are", ErrInvalidToken)
	}
	var exp time.Time
	if raw, ok := claims["exp"]; ok {
		var secs float64
		if json.Unmarshal(raw, &secs) != nil {
			return time.Time{}, fmt.Errorf("%w: its exp claim is not a number", ErrInvalidToken)
		}
		exp = time.Unix(int64(secs), 0)
		if now.After(exp.Add(expiryLeeway)) {
			return time.Time{}, fmt.Errorf("%w: it expired at %s", ErrInvalidToken, exp.UTC().Format(time.RFC3339))
		}
	}
	if raw, ok := claims["aud"]; ok {
		// A string or an array of strings (RFC 7519).
		var aud []string
		var one string
		if json.Unmarshal(raw, &one) == nil {
			aud = []string{one}
		} else if json.Unmarshal(raw, &aud) != nil {
			return time.Time{}, fmt.Errorf("%w: its aud claim is neither a string nor an array of strings", ErrInvalidToken)
		}
		if !slices.Contains(aud, r.audience) {
			return time.Time{}, fmt.Errorf("%w: it is not for audience %q (its audiences: %s)", ErrInvalidToken, r.audience, strings.Join(aud, ", "))
		}
	}
	return exp, nil
}

// ask sends the TokenReview.
func (r *TokenReviewer) ask(ctx context.Context, token string, exp, now time.Time) (Caller, error, time.Time) {
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
	if !exp.IsZero() && exp.Before(expires) {
		expires = exp
	}
	return Caller{Namespace: ns, ServiceAccount: sa, TrustDomain: r.trustDomain, Source: SourceToken}, nil, expires
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
