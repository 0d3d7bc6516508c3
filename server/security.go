package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kuberpc/kuberpc/internal/rpcmetrics"
	"github.com/kuberpc/kuberpc/security"
)

// maxPolicySize bounds the authorization policy file.
const maxPolicySize = 1 << 20

// authState is a Server's authentication and authorization; nil when
// both are off.
type authState struct {
	authn    security.Authenticator
	authz    *security.Authorizer // nil: any authenticated caller may call
	required bool                 // calls must carry an identity
	audience string
	mutual   bool // clients present certificates
	denied   *prometheus.CounterVec
	logged   sync.Map // "reason|caller|method" → struct{}: denials already logged
	nLogged  atomic.Int64
}

// maxLoggedDenials bounds the distinct denials logged (each is logged
// once per caller and method).
const maxLoggedDenials = 10000

// noIdentity are methods answered without authentication: kubelet and
// load balancer health checks carry no identity. The other monitoring
// methods (exemptMethods: reflection, ORCA) need an identity but no
// policy rule.
var noIdentity = map[string]bool{
	"/grpc.health.v1.Health/Check": true,
	"/grpc.health.v1.Health/Watch": true,
	"/grpc.health.v1.Health/List":  true,
}

// newSecurity sets up the server's TLS credentials (added to gopts) and
// its authentication and authorization from cfg and o.
func (s *Server) newSecurity(cfg Security, o *options, reg prometheus.Registerer) (_ []grpc.ServerOption, err error) {
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	var gopts []grpc.ServerOption
	if cfg.TLSDir != "" {
		creds, closeCreds, err := security.ServerCredentials(security.TLSConfig{Dir: cfg.TLSDir, MutualTLS: cfg.MutualTLS, Refresh: cfg.TLSRefresh})
		if err != nil {
			return nil, fmt.Errorf("invalid TLS_DIR %q: %w", cfg.TLSDir, err)
		}
		s.closers = append(s.closers, closeCreds)
		gopts = append(gopts, grpc.Creds(creds))
	}
	authz := o.authorizer
	switch {
	case authz != nil:
	case cfg.PolicyFile != "":
		b, err := readLimited(cfg.PolicyFile, maxPolicySize)
		if err != nil {
			return nil, fmt.Errorf("invalid AUTHZ_POLICY %q: %w", cfg.PolicyFile, err)
		}
		if authz, err = security.ParsePolicy(b); err != nil {
			return nil, fmt.Errorf("invalid AUTHZ_POLICY %q: %w", cfg.PolicyFile, err)
		}
	case cfg.Policy != "":
		if len(cfg.Policy) > maxPolicySize {
			return nil, fmt.Errorf("invalid AUTHZ_POLICY_INLINE: larger than %d bytes", maxPolicySize)
		}
		if authz, err = security.ParsePolicy([]byte(cfg.Policy)); err != nil {
			return nil, fmt.Errorf("invalid AUTHZ_POLICY_INLINE: %w", err)
		}
	}
	if cfg.Audience == "" && authz == nil && !cfg.MutualTLS {
		return gopts, nil
	}
	if authz != nil && cfg.Audience == "" && !cfg.MutualTLS {
		src := "AUTHZ_POLICY"
		switch {
		case o.authorizer != nil:
			src = "the authorization policy (WithAuthorizer)"
		case cfg.Policy != "":
			src = "AUTHZ_POLICY_INLINE"
		}
		return nil, fmt.Errorf("%s: no caller can be identified (neither TLS_CLIENT_AUTH=require nor AUTH_AUDIENCE is set), so every call but health checks would fail UNAUTHENTICATED; set one of them", src)
	}
	a := &authState{authz: authz, required: true, audience: cfg.Audience, mutual: cfg.MutualTLS}
	if cfg.Audience != "" {
		reviews := o.tokenReviews
		if reviews == nil {
			rc, err := rest.InClusterConfig()
			if err != nil {
				return nil, fmt.Errorf("AUTH_AUDIENCE is set, so tokens are reviewed with the Kubernetes API, but the server is not in a pod (%v); outside a cluster pass server.WithTokenReviews", err)
			}
			cs, err := kubernetes.NewForConfig(reviewConfig(rc))
			if err != nil {
				return nil, fmt.Errorf("token review client: %w", err)
			}
			reviews = cs.AuthenticationV1().TokenReviews()
		}
		tr, err := security.NewTokenReviewer(reviews, cfg.Audience, cfg.TrustDomain, cfg.TokenTTL)
		if err != nil {
			return nil, fmt.Errorf("invalid AUTH_AUDIENCE: %w", err)
		}
		a.authn.Tokens = tr
		a.authn.AllowPlaintextTokens = o.plaintextTokens
	}
	denied, err := rpcmetrics.RegisterShared(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kuberpc_server_denied_total",
		Help: "Calls refused by authentication (reason unauthenticated) or authorization (reason permission_denied).",
	}, []string{"grpc_method", "reason"}))
	if err != nil {
		return nil, fmt.Errorf("register server metrics: %w", err)
	}
	a.denied = denied
	s.auth = a
	return gopts, nil
}

// reviewConfig is rc for the TokenReview client, without client-go's
// default rate limit (5 requests a second, bursts of 10): the reviewer
// bounds its reviews in flight itself (security.MaxReviewsInFlight), and
// the API server's priority and fairness protects it. With that limit,
// the first calls of 60 client pods to a new replica (every token new to
// its cache) would wait up to 10 s for their reviews, past a default
// deadline.
func reviewConfig(rc *rest.Config) *rest.Config {
	rc = rest.CopyConfig(rc)
	rc.QPS = -1
	return rc
}

// close stops what the server started beside gRPC (the TLS file
// watchers).
func (s *Server) close() {
	for _, c := range s.closers {
		c()
	}
	s.closers = nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// checkPolicy reports the methods and services of the authorization
// policy that no registered service has: a rule for a misspelt method
// allows nothing, and its callers would be denied.
func (s *Server) checkPolicy() error {
	if s.auth == nil || s.auth.authz == nil {
		return nil
	}
	services := map[string]bool{}
	for svc := range s.grpc.GetServiceInfo() {
		services[svc] = true
	}
	unknown := s.auth.authz.Unknown(func(m string) bool { return s.metricName(m) == m }, func(svc string) bool { return services[svc] })
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("invalid AUTHZ_POLICY: %s: no registered service has this", strings.Join(unknown, ", "))
}

// authorize authenticates the caller of method and checks the policy,
// returning ctx with the caller (see security.CallerFrom).
func (s *Server) authorize(ctx context.Context, method string) (context.Context, error) {
	a := s.auth
	if a == nil || noIdentity[method] {
		return ctx, nil
	}
	caller, ok, err := a.authn.Authenticate(ctx)
	if err != nil {
		if status.Code(err) == codes.Unauthenticated {
			s.deny(ctx, "unauthenticated", "", method, err)
		}
		return ctx, err
	}
	if !ok {
		err := status.Error(codes.Unauthenticated, a.noIdentityMessage())
		s.deny(ctx, "unauthenticated", "", method, err)
		return ctx, err
	}
	ctx = security.NewContext(ctx, caller)
	if a.authz != nil && !s.exempt[method] && !a.authz.Allowed(caller, method) {
		err := status.Errorf(codes.PermissionDenied, "kuberpc: %s may not call %s (no rule of the authorization policy allows it)", caller, shortMethod(method))
		s.deny(ctx, "permission_denied", caller.String(), method, err)
		return ctx, err
	}
	return ctx, nil
}

func (a *authState) noIdentityMessage() string {
	var ways []string
	if a.authn.Tokens != nil {
		ways = append(ways, fmt.Sprintf("a ServiceAccount token for audience %q (authorization: Bearer)", a.audience))
	}
	if a.mutual || len(ways) == 0 {
		ways = append(ways, "a client certificate with a spiffe:// identity (mTLS)")
	}
	return "kuberpc: the call carries no identity; this server requires " + strings.Join(ways, " or ")
}

// deny counts a refused call and logs it once per reason, caller and
// method (never the token).
func (s *Server) deny(ctx context.Context, reason, caller, method string, err error) {
	name := s.metricName(method)
	s.auth.denied.WithLabelValues(name, reason).Inc()
	if s.auth.nLogged.Load() >= maxLoggedDenials {
		return
	}
	key := reason + "|" + caller + "|" + name + "|" + status.Convert(err).Message()
	if _, seen := s.auth.logged.LoadOrStore(key, struct{}{}); seen {
		return
	}
	s.auth.nLogged.Add(1)
	attrs := []slog.Attr{slog.String("method", shortMethod(method)), slog.String("reason", reason), slog.String("err", status.Convert(err).Message())}
	if caller != "" {
		attrs = append(attrs, slog.String("caller", caller))
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "call denied (logged once per caller and method)", attrs...)
}
