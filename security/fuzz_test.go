package security

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzPolicy: any policy text parses or fails with an error, and a path
// is allowed only when a rule names its method exactly, its service (up
// to the last '/', as grpc-go routes), or every method.
func FuzzPolicy(f *testing.F) {
	f.Add("rules: [{methods: [/a.B/C], callers: [ns/sa]}]", "/a.B/C", "ns", "sa")
	f.Add("rules: [{methods: [/a.B/*], callers: [\"*\"]}]", "/a.B/C/../D", "x", "y")
	f.Add("rules: [{methods: [\"*\"], callers: [spiffe://td/ns/a/sa/b]}]", "//a.B/C", "a", "b")
	f.Add("{\"rules\":[{\"methods\":[\"/a.B/C\"],\"callers\":[\"ns/*\"]}]}", "/a.B/C/", "ns", "z")
	f.Fuzz(func(t *testing.T, policy, path, ns, sa string) {
		a, err := ParsePolicy([]byte(policy))
		if err != nil {
			return
		}
		c := Caller{TrustDomain: DefaultTrustDomain, Namespace: ns, ServiceAccount: sa}
		if !a.Allowed(c, path) {
			return
		}
		if len(a.any) > 0 {
			return
		}
		if _, ok := a.methods[path]; ok {
			return
		}
		i := strings.LastIndexByte(path, '/')
		if strings.HasPrefix(path, "/") && i > 0 {
			if _, ok := a.services[path[1:i]]; ok {
				return
			}
		}
		t.Errorf("%q allowed to %+v by no rule naming it (policy %q)", path, c, policy)
	})
}

// FuzzParseSPIFFEID: an ID that parses names a ServiceAccount whose
// SPIFFEID parses back to it.
func FuzzParseSPIFFEID(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/default/sa/frontend", "spiffe://td/ns/a/sa/b.c", "spiffe://x/ns/a/sa/b?q", "spiffe://%41/ns/a/sa/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		c, err := ParseSPIFFEID(id)
		if err != nil {
			return
		}
		back, err := ParseSPIFFEID(c.SPIFFEID())
		if err != nil || back != c {
			t.Errorf("%q → %+v → %q → %+v, %v", id, c, c.SPIFFEID(), back, err)
		}
		if !dns1123(c.Namespace, 63, false) || !dns1123(c.ServiceAccount, 253, true) {
			t.Errorf("%q gave names %q/%q", id, c.Namespace, c.ServiceAccount)
		}
	})
}

// FuzzBearerToken: authorization metadata parses to a token or an
// ErrInvalidToken, and a token's claims are read without a panic, to
// claims or an ErrInvalidToken.
func FuzzBearerToken(f *testing.F) {
	f.Add("Bearer eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln")
	f.Add("bearer a.b.c")
	f.Add("Basic x")
	f.Fuzz(func(t *testing.T, header string) {
		tok, ok, err := BearerToken([]string{header})
		if err != nil || !ok {
			return
		}
		if tok == "" || strings.TrimSpace(tok) != tok {
			t.Errorf("%q gave token %q", header, tok)
		}
		r := &TokenReviewer{audience: "example"}
		if _, err := r.precheck(tok, time.Unix(1_000_000, 0)); err != nil && !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%q: %v; want claims or ErrInvalidToken", tok, err)
		}
	})
}
