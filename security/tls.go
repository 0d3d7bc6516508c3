package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"google.golang.org/grpc/security/advancedtls"
)

// The files of a TLS directory, as cert-manager writes a certificate's
// Secret and csi-driver-spiffe (or the local cluster's node agent) a pod's
// volume.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// DefaultRefresh is how often the server re-reads its TLS files unless
// told otherwise (TLS_REFRESH), and a sensible TLSConfig.Refresh.
const DefaultRefresh = 10 * time.Second

// TLSConfig is a TLS identity and trust roots read from a directory.
type TLSConfig struct {
	// Dir holds tls.crt (the certificate chain), tls.key (its key) and,
	// for mTLS or to verify the server, ca.crt (the CA bundle).
	Dir string
	// MutualTLS, on a server, requires every client to present a
	// certificate signed by ca.crt; its URI SAN is then the caller's
	// identity. On a client, it presents tls.crt.
	MutualTLS bool
	// Refresh is how often the files are re-read; a change is used by the
	// next handshake, connections already open keep their session until
	// they are recycled. It must be positive (DefaultRefresh is the
	// server's default): a directory that a CSI driver or cert-manager
	// fills changes under the process, so there is no "never", and zero
	// is refused rather than read as some default. A certificate that has
	// expired is not handed out while the files hold a later one: they
	// are then read at once (at most once a second).
	Refresh time.Duration
	// ServerIdentity, on a client, is the identity the server's
	// certificate must carry in its spiffe:// URI SAN, as a policy caller
	// is written: "namespace/name", "namespace/*", a SPIFFE ID, or "*"
	// (any workload the CA signed). Workload certificates (csi-driver-spiffe,
	// the local cluster's) name no host, only the workload. Empty means
	// the usual TLS check of the host name the client dials.
	ServerIdentity string
}

func (c TLSConfig) path(name string) string { return filepath.Join(c.Dir, name) }

// check reads the files once, so that a missing or malformed file is an
// error naming it now rather than a handshake that waits forever.
func (c TLSConfig) check(needKey, needCA bool) error {
	if c.Dir == "" {
		return errors.New("TLS directory not set")
	}
	var errs []error
	if c.Refresh <= 0 {
		errs = append(errs, fmt.Errorf("TLSConfig.Refresh is %v: how often the files are re-read must be positive (security.DefaultRefresh is %v)", c.Refresh, DefaultRefresh))
	}
	if needKey {
		if _, err := tls.LoadX509KeyPair(c.path(CertFile), c.path(KeyFile)); err != nil {
			errs = append(errs, fmt.Errorf("%s and %s: %w", c.path(CertFile), c.path(KeyFile), err))
		}
	}
	if needCA {
		b, err := os.ReadFile(c.path(CAFile))
		if err == nil && !x509.NewCertPool().AppendCertsFromPEM(b) {
			err = errors.New("no PEM certificate in it")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.path(CAFile), err))
		}
	}
	return errors.Join(errs...)
}

func (c TLSConfig) provider(withKey, withCA bool) (certprovider.Provider, error) {
	o := pemfile.Options{RefreshDuration: c.Refresh}
	if withKey {
		o.CertFile, o.KeyFile = c.path(CertFile), c.path(KeyFile)
	}
	if withCA {
		o.RootFile = c.path(CAFile)
	}
	p, err := pemfile.NewProvider(o)
	if err != nil || !withKey {
		return p, err
	}
	return &freshIdentity{Provider: p, certFile: o.CertFile, keyFile: o.KeyFile, now: time.Now}, nil
}

// rereadExpired is how often, at most, freshIdentity reads the files
// while the certificate it would hand out has expired.
const rereadExpired = time.Second

// freshIdentity is a certificate provider that does not hand out an
// expired certificate while the files hold a valid one. The pemfile
// provider re-reads them every Refresh; a certificate that expires
// between two reads (its renewal written after the last one) would
// otherwise fail every handshake until the next, as it did on the test
// cluster whose pods' certificates live 3 s against a 10 s refresh.
// While the certificate has expired the files are read at once (at most
// every rereadExpired) and a later one is used until the provider
// catches up.
type freshIdentity struct {
	certprovider.Provider
	certFile, keyFile string
	now               func() time.Time

	mu       sync.Mutex
	read     *certprovider.KeyMaterial // read from the files; nil: none
	lastRead time.Time
}

func (p *freshIdentity) KeyMaterial(ctx context.Context) (*certprovider.KeyMaterial, error) {
	km, err := p.Provider.KeyMaterial(ctx)
	if err != nil || len(km.Certs) == 0 {
		return km, err
	}
	now := p.now()
	notAfter := expiry(&km.Certs[0])
	if !now.After(notAfter) {
		return km, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.read != nil && expiry(&p.read.Certs[0]).After(notAfter) {
		km, notAfter = p.read, expiry(&p.read.Certs[0])
	}
	if !now.After(notAfter) || now.Sub(p.lastRead) < rereadExpired {
		return km, nil
	}
	p.lastRead = now
	c, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil || !expiry(&c).After(notAfter) {
		return km, nil // the handshake names the expired certificate
	}
	p.read = &certprovider.KeyMaterial{Certs: []tls.Certificate{c}, Roots: km.Roots}
	return p.read, nil
}

// expiry is c's leaf's NotAfter (the zero time if it cannot be parsed).
func expiry(c *tls.Certificate) time.Time {
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return time.Time{}
	}
	return leaf.NotAfter
}

// ServerCredentials returns the transport credentials of a server with
// the identity in c.Dir, re-read every c.Refresh. With c.MutualTLS,
// clients must present a certificate; it is verified against ca.crt (as
// re-read) once per connection, after the handshake, so that a client
// whose certificate is missing, expired or from another CA learns why
// from each call's UNAUTHENTICATED status rather than from a handshake
// that fails with a broken pipe (TLS 1.3 reports a refused client
// certificate only after the client has begun to write). No call but a
// health check is answered without a verified identity (see
// Authenticator). Close the returned closer when the server has stopped.
// TLS 1.2 is the minimum.
func ServerCredentials(c TLSConfig) (credentials.TransportCredentials, func(), error) {
	if err := c.check(true, c.MutualTLS); err != nil {
		return nil, nil, fmt.Errorf("server TLS: %w", err)
	}
	id, err := c.provider(true, false)
	if err != nil {
		return nil, nil, fmt.Errorf("server TLS: %w", err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			km, err := id.KeyMaterial(hello.Context())
			if err != nil {
				return nil, err
			}
			if len(km.Certs) == 0 {
				return nil, errors.New("no server certificate")
			}
			return &km.Certs[0], nil
		},
	}
	closers := []func(){id.Close}
	var roots certprovider.Provider
	if c.MutualTLS {
		if roots, err = c.provider(false, true); err != nil {
			id.Close()
			return nil, nil, fmt.Errorf("server TLS: %w", err)
		}
		closers = append(closers, roots.Close)
		cfg.ClientAuth = tls.RequestClientCert
	}
	creds := &serverCreds{TransportCredentials: credentials.NewTLS(cfg), roots: roots}
	return creds, func() {
		for _, c := range closers {
			c()
		}
	}, nil
}

// serverCreds are TLS server credentials that, for mTLS, verify the
// client's certificate after the handshake and carry the result to each
// call in the connection's AuthInfo (peerIdentity).
type serverCreds struct {
	credentials.TransportCredentials
	roots certprovider.Provider // nil: no client certificates asked for
}

// peerIdentity is the AuthInfo of an mTLS connection: its TLS state and
// the verified identity of its client, or why there is none.
type peerIdentity struct {
	credentials.TLSInfo
	caller Caller
	err    error
}

func (c *serverCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil || c.roots == nil {
		return conn, ai, err
	}
	ti, ok := ai.(credentials.TLSInfo)
	if !ok {
		conn.Close()
		return nil, nil, fmt.Errorf("unexpected auth info %T", ai)
	}
	p := &peerIdentity{TLSInfo: ti}
	p.caller, p.err = c.verify(ti.State)
	return conn, p, nil
}

func (c *serverCreds) Clone() credentials.TransportCredentials {
	return &serverCreds{TransportCredentials: c.TransportCredentials.Clone(), roots: c.roots}
}

// verify checks the client's certificate chain against the current CA
// bundle and returns its identity.
func (c *serverCreds) verify(state tls.ConnectionState) (Caller, error) {
	if len(state.PeerCertificates) == 0 {
		return Caller{}, errors.New("no client certificate: this server requires one (mTLS)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	km, err := c.roots.KeyMaterial(ctx)
	if err != nil {
		return Caller{}, fmt.Errorf("CA bundle: %w", err)
	}
	inter := x509.NewCertPool()
	for _, ic := range state.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	chains, err := state.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: km.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return Caller{}, fmt.Errorf("client certificate refused: %w", err)
	}
	caller, ok, err := certificateCaller(tls.ConnectionState{VerifiedChains: chains})
	if err == nil && !ok {
		err = errors.New("client certificate has no identity")
	}
	if err != nil {
		return Caller{}, fmt.Errorf("client %w", err)
	}
	return caller, nil
}

// ClientCredentials returns the transport credentials of a client that
// verifies servers against c.Dir/ca.crt (their certificates must name
// the host the client dials, or, for kubernetes:/// targets, the
// Service's DNS name) and, with c.MutualTLS, presents c.Dir/tls.crt. The
// files are re-read every c.Refresh. Close the returned closer with the
// connection.
func ClientCredentials(c TLSConfig) (credentials.TransportCredentials, func(), error) {
	if err := c.check(c.MutualTLS, true); err != nil {
		return nil, nil, fmt.Errorf("client TLS: %w", err)
	}
	roots, err := c.provider(false, true)
	if err != nil {
		return nil, nil, fmt.Errorf("client TLS: %w", err)
	}
	closers := []func(){roots.Close}
	o := &advancedtls.Options{
		RootOptions:   advancedtls.RootCertificateOptions{RootProvider: roots},
		MinTLSVersion: tls.VersionTLS12,
		MaxTLSVersion: tls.VersionTLS13,
	}
	if c.ServerIdentity != "" {
		want, err := parseCallerPattern(c.ServerIdentity)
		if err != nil {
			roots.Close()
			return nil, nil, fmt.Errorf("client TLS: server identity: %w", err)
		}
		o.VerificationType = advancedtls.CertVerification
		o.AdditionalPeerVerification = func(info *advancedtls.HandshakeVerificationInfo) (*advancedtls.PostHandshakeVerificationResults, error) {
			got, ok, err := certificateCaller(tls.ConnectionState{VerifiedChains: info.VerifiedChains})
			switch {
			case err != nil:
				return nil, fmt.Errorf("server %w", err)
			case !ok:
				return nil, errors.New("server certificate has no spiffe:// URI SAN")
			case !want.matches(got):
				return nil, fmt.Errorf("server is %s, not %s", got, c.ServerIdentity)
			}
			return &advancedtls.PostHandshakeVerificationResults{}, nil
		}
	}
	if c.MutualTLS {
		id, err := c.provider(true, false)
		if err != nil {
			roots.Close()
			return nil, nil, fmt.Errorf("client TLS: %w", err)
		}
		closers = append(closers, id.Close)
		o.IdentityOptions = advancedtls.IdentityCertificateOptions{IdentityProvider: id}
	}
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	creds, err := advancedtls.NewClientCreds(o)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("client TLS: %w", err)
	}
	return creds, closeAll, nil
}

// certificateCaller is the identity in the URI SAN of a verified client
// certificate.
func certificateCaller(state tls.ConnectionState) (Caller, bool, error) {
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return Caller{}, false, nil
	}
	leaf := state.VerifiedChains[0][0]
	for _, u := range leaf.URIs {
		if u.Scheme == "spiffe" {
			c, err := ParseSPIFFEID(u.String())
			if err != nil {
				return Caller{}, false, fmt.Errorf("certificate: %w", err)
			}
			c.Source = SourceCertificate
			return c, true, nil
		}
	}
	return Caller{}, false, errors.New("certificate has no spiffe:// URI SAN naming a ServiceAccount")
}
