package security

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// DefaultTrustDomain is the SPIFFE trust domain of a cluster whose
// domain is the Kubernetes default.
const DefaultTrustDomain = "cluster.local"

// Source says how a caller's identity was proven.
type Source string

const (
	// SourceCertificate: the URI SAN of a client certificate verified
	// against the server's CA.
	SourceCertificate Source = "certificate"
	// SourceToken: a ServiceAccount token the API server reviewed for the
	// server's audience.
	SourceToken Source = "token"
)

// Caller is the authenticated identity of the client of an RPC: a
// Kubernetes ServiceAccount.
type Caller struct {
	// Namespace and ServiceAccount name the caller's ServiceAccount.
	Namespace, ServiceAccount string
	// TrustDomain is the SPIFFE trust domain the identity belongs to.
	TrustDomain string
	// Source is how the identity was proven.
	Source Source
}

// SPIFFEID is the caller's identity as a SPIFFE ID,
// spiffe://<trust domain>/ns/<namespace>/sa/<name>.
func (c Caller) SPIFFEID() string {
	return "spiffe://" + c.TrustDomain + "/ns/" + c.Namespace + "/sa/" + c.ServiceAccount
}

// String is the caller's SPIFFE ID.
func (c Caller) String() string { return c.SPIFFEID() }

type callerKey struct{}

// NewContext returns ctx carrying c, as the server does before a handler
// runs.
func NewContext(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the authenticated caller of the RPC whose context is
// ctx, and false when the server authenticated none (security is off, or
// the method is one that needs no identity, such as health checks).
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// ParseSPIFFEID parses a Kubernetes workload SPIFFE ID,
// spiffe://<trust domain>/ns/<namespace>/sa/<name>.
func ParseSPIFFEID(id string) (Caller, error) {
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "" {
		return Caller{}, fmt.Errorf("%q is not a SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/sa/<name>)", truncate(id))
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || !dns1123(parts[1], 63, false) || !dns1123(parts[3], 253, true) {
		return Caller{}, fmt.Errorf("SPIFFE ID %q does not name a ServiceAccount (want spiffe://%s/ns/<namespace>/sa/<name>)", truncate(id), u.Host)
	}
	return Caller{TrustDomain: u.Host, Namespace: parts[1], ServiceAccount: parts[3]}, nil
}

// ParseServiceAccountUser parses the user name the API server gives a
// ServiceAccount, system:serviceaccount:<namespace>:<name>.
func ParseServiceAccountUser(user string) (namespace, name string, err error) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || !dns1123(ns, 63, false) || !dns1123(sa, 253, true) {
		return "", "", fmt.Errorf("user %q is not a ServiceAccount (system:serviceaccount:<namespace>:<name>)", truncate(user))
	}
	return ns, sa, nil
}

// dns1123 reports whether s is a DNS-1123 name of at most max
// characters: lower-case letters, digits, and '-' (and '.' when dots is
// set) inside. Namespaces are labels (63, no dots); ServiceAccount names
// are subdomains (253, dots).
func dns1123(s string, max int, dots bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		case c == '.' && dots && i > 0 && i < len(s)-1 && s[i-1] != '.':
		default:
			return false
		}
	}
	return true
}

// truncate shortens input quoted in an error.
func truncate(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}
