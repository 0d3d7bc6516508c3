package security

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"

	"github.com/kuberpc/kuberpc/internal/workloadca"
)

// staticProvider hands out the same key material until told otherwise.
type staticProvider struct{ km *certprovider.KeyMaterial }

func (p *staticProvider) KeyMaterial(context.Context) (*certprovider.KeyMaterial, error) {
	return p.km, nil
}
func (p *staticProvider) Close() {}

func TestFreshIdentity(t *testing.T) {
	ca, err := workloadca.New("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issue := func(ttl time.Duration) tls.Certificate {
		t.Helper()
		iss, err := ca.IssueDir(dir, "spiffe://cluster.local/ns/default/sa/example", ttl)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	serial := func(km *certprovider.KeyMaterial) string { return km.Certs[0].Leaf.SerialNumber.String() }

	start := time.Now()
	now := start
	loaded := issue(10 * time.Second) // what the provider read last
	inner := &staticProvider{km: &certprovider.KeyMaterial{Certs: []tls.Certificate{loaded}}}
	p := &freshIdentity{Provider: inner, certFile: filepath.Join(dir, CertFile), keyFile: filepath.Join(dir, KeyFile), now: func() time.Time { return now }}
	get := func() string {
		t.Helper()
		km, err := p.KeyMaterial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return serial(km)
	}

	renewed := issue(time.Hour) // written after the provider's last read
	if got := get(); got != serial(inner.km) {
		t.Errorf("valid certificate: got %s, want the provider's", got)
	}
	now = start.Add(11 * time.Second) // the provider's has expired
	if got, want := get(), renewed.Leaf.SerialNumber.String(); got != want {
		t.Errorf("expired certificate, renewed on disk: got %s, want the file's %s", got, want)
	}
	issue(2 * time.Hour)
	if got, want := get(), renewed.Leaf.SerialNumber.String(); got != want {
		t.Errorf("the one read is still valid: got %s, want it (%s), the files not read again", got, want)
	}
	inner.km = &certprovider.KeyMaterial{Certs: []tls.Certificate{issue(3 * time.Hour)}}
	if got := get(); got != serial(inner.km) {
		t.Errorf("the provider caught up: got %s, want its %s", got, serial(inner.km))
	}

	// Files no newer than the expired certificate: it is kept (the
	// handshake names the expiry), and the files are read at most every
	// rereadExpired.
	now = start.Add(4 * time.Hour)
	stale := serial(inner.km)
	if got := get(); got != stale {
		t.Errorf("nothing newer on disk: got %s, want the expired %s", got, stale)
	}
	fresh := issue(5 * time.Hour)
	now = now.Add(rereadExpired / 2)
	if got := get(); got != stale {
		t.Errorf("within rereadExpired of the last read: got %s, want %s (files not read)", got, stale)
	}
	now = now.Add(rereadExpired)
	if got, want := get(), fresh.Leaf.SerialNumber.String(); got != want {
		t.Errorf("after rereadExpired: got %s, want the file's %s", got, want)
	}
}

// TestCredentialsErrorsNameTheProblem: a TLS configuration that cannot
// work is refused when the credentials are built, naming what is wrong:
// no directory, a refresh that is not positive (zero is not read as a
// default), a missing file, a CA bundle with no certificate in it.
func TestCredentialsErrorsNameTheProblem(t *testing.T) {
	ca, err := workloadca.New("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	good := t.TempDir()
	iss, err := ca.IssueDir(good, "spiffe://cluster.local/ns/default/sa/example", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	badCA := t.TempDir()
	if err := workloadca.WriteDir(badCA, iss, []byte("not PEM")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    TLSConfig
		want string
	}{
		{"no directory", TLSConfig{Refresh: DefaultRefresh}, "TLS directory not set"},
		{"zero refresh", TLSConfig{Dir: good}, "TLSConfig.Refresh is 0s: how often the files are re-read must be positive"},
		{"negative refresh", TLSConfig{Dir: good, Refresh: -time.Second}, "TLSConfig.Refresh is -1s"},
		{"no files", TLSConfig{Dir: empty, MutualTLS: true, Refresh: DefaultRefresh}, filepath.Join(empty, CertFile)},
		{"CA bundle without a certificate", TLSConfig{Dir: badCA, MutualTLS: true, Refresh: DefaultRefresh}, filepath.Join(badCA, CAFile) + ": no PEM certificate in it"},
	} {
		for side, build := range map[string]func(TLSConfig) (credentials.TransportCredentials, func(), error){
			"server": ServerCredentials, "client": ClientCredentials,
		} {
			creds, closeCreds, err := build(tc.c)
			if err == nil {
				closeCreds()
				t.Errorf("%s, %s: got credentials %T, want an error saying %q", tc.name, side, creds, tc.want)
				continue
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), side+" TLS: ") {
				t.Errorf("%s, %s: %v; want %q", tc.name, side, err, side+" TLS: …"+tc.want)
			}
		}
	}
	creds, closeCreds, err := ServerCredentials(TLSConfig{Dir: good, MutualTLS: true, Refresh: DefaultRefresh})
	if err != nil || creds == nil {
		t.Fatalf("a good directory: %v", err)
	}
	closeCreds()
}
