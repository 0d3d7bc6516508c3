package security

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kuberpc/kuberpc/internal/strictdecode"
)

// Policy is a per-method authorization policy: a call is allowed when a
// rule names both its method and its caller, and denied otherwise
// (health checks excepted, which the server answers without identity).
//
// In YAML (or JSON):
//
//	rules:
//	- methods: ["/example.ExampleService/SayHello"]
//	  callers: ["default/frontend", "spiffe://cluster.local/ns/jobs/sa/batch"]
//	- methods: ["/example.StreamService/*"]
//	  callers: ["monitoring/*"]
type Policy struct {
	Rules []Rule `json:"rules"`
}

// Rule allows Methods to Callers.
type Rule struct {
	// Methods are full method names, "/pkg.Service/Method", every method
	// of a service, "/pkg.Service/*", or "*", every method.
	Methods []string `json:"methods"`
	// Callers are ServiceAccounts, "namespace/name", every ServiceAccount
	// of a namespace, "namespace/*", a SPIFFE ID
	// "spiffe://<trust domain>/ns/<namespace>/sa/<name>" (which also
	// pins the trust domain), or "*", any authenticated caller.
	Callers []string `json:"callers"`
}

// callerPattern is a parsed Rule caller; empty fields match anything.
type callerPattern struct {
	trustDomain, namespace, name string
}

func (p callerPattern) matches(c Caller) bool {
	return (p.trustDomain == "" || p.trustDomain == c.TrustDomain) &&
		(p.namespace == "" || p.namespace == c.Namespace) &&
		(p.name == "" || p.name == c.ServiceAccount)
}

// Authorizer decides calls by a Policy.
type Authorizer struct {
	methods  map[string][]callerPattern // "/pkg.Service/Method"
	services map[string][]callerPattern // "pkg.Service"
	any      []callerPattern            // "*"
	policy   Policy
}

// ParsePolicy reads a Policy from YAML or JSON, refusing unknown fields
// (field names are case-sensitive: of a rule with callers and Callers,
// one list would otherwise be dropped without a word) and malformed
// method or caller names; each error names the rule and the value.
func ParsePolicy(data []byte) (*Authorizer, error) {
	var p Policy
	if err := strictdecode.YAML(data, &p); err != nil {
		return nil, fmt.Errorf("authorization policy: %w", err)
	}
	return NewAuthorizer(p)
}

// NewAuthorizer compiles p.
func NewAuthorizer(p Policy) (*Authorizer, error) {
	a := &Authorizer{methods: map[string][]callerPattern{}, services: map[string][]callerPattern{}, policy: p}
	var errs []error
	if len(p.Rules) == 0 {
		errs = append(errs, errors.New("authorization policy: no rules (every call would be denied)"))
	}
	for i, r := range p.Rules {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("authorization policy: rules[%d]: "+format, append([]any{i}, args...)...))
		}
		if len(r.Methods) == 0 {
			bad("no methods")
		}
		if len(r.Callers) == 0 {
			bad("no callers")
		}
		var callers []callerPattern
		for _, c := range r.Callers {
			cp, err := parseCallerPattern(c)
			if err != nil {
				bad("callers: %v", err)
				continue
			}
			callers = append(callers, cp)
		}
		for _, m := range r.Methods {
			switch svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/"); {
			case m == "*":
				a.any = append(a.any, callers...)
			case !strings.HasPrefix(m, "/") || !ok || svc == "" || method == "" || strings.Contains(method, "/"):
				bad("methods: %q is not /pkg.Service/Method, /pkg.Service/* or *", truncate(m))
			case method == "*":
				a.services[svc] = append(a.services[svc], callers...)
			default:
				a.methods[m] = append(a.methods[m], callers...)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

func parseCallerPattern(s string) (callerPattern, error) {
	switch {
	case s == "*":
		return callerPattern{}, nil
	case strings.HasPrefix(s, "spiffe://"):
		c, err := ParseSPIFFEID(s)
		if err != nil {
			return callerPattern{}, err
		}
		return callerPattern{trustDomain: c.TrustDomain, namespace: c.Namespace, name: c.ServiceAccount}, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || !dns1123(ns, 63, false) || (name != "*" && !dns1123(name, 253, true)) {
		return callerPattern{}, fmt.Errorf("%q is not namespace/serviceaccount, namespace/*, a SPIFFE ID or *", truncate(s))
	}
	if name == "*" {
		name = ""
	}
	return callerPattern{namespace: ns, name: name}, nil
}

// Allowed reports whether c may call method, the :path of the call
// ("/pkg.Service/Method"). Its service is read as grpc-go routes the
// call (up to the last '/'), so a rule for one method or service can
// never match a path that grpc-go sends elsewhere.
func (a *Authorizer) Allowed(c Caller, method string) bool {
	for _, p := range a.methods[method] {
		if p.matches(c) {
			return true
		}
	}
	if i := strings.LastIndexByte(method, '/'); strings.HasPrefix(method, "/") && i > 0 {
		for _, p := range a.services[method[1:i]] {
			if p.matches(c) {
				return true
			}
		}
	}
	for _, p := range a.any {
		if p.matches(c) {
			return true
		}
	}
	return false
}

// Unknown returns the method names and services of the policy for which
// known (a method's full name, or a service name) is false: a rule for a
// misspelt method allows nothing.
func (a *Authorizer) Unknown(knownMethod, knownService func(string) bool) []string {
	var out []string
	for m := range a.methods {
		if !knownMethod(m) {
			out = append(out, m)
		}
	}
	for s := range a.services {
		if !knownService(s) {
			out = append(out, "/"+s+"/*")
		}
	}
	return out
}

// Policy returns the policy a was compiled from.
func (a *Authorizer) Policy() Policy { return a.policy }

// Namespaces returns the namespaces a's rules name callers in, and
// whether some rule allows callers from any namespace: what a
// NetworkPolicy derived from the same rules must admit.
func (p Policy) Namespaces() (namespaces []string, anyNamespace bool) {
	seen := map[string]bool{}
	for _, r := range p.Rules {
		for _, c := range r.Callers {
			cp, err := parseCallerPattern(c)
			if err != nil {
				continue
			}
			if cp.namespace == "" {
				anyNamespace = true
				continue
			}
			if !seen[cp.namespace] {
				seen[cp.namespace] = true
				namespaces = append(namespaces, cp.namespace)
			}
		}
	}
	return namespaces, anyNamespace
}
