// Package pki creates the certificates and keys of a local cluster: a CA,
// serving certificates, client certificates for each component, and the
// service-account signing key. Everything is written as PEM files in one
// directory and reused when present, so a restart keeps every kubeconfig
// valid.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// validity of every certificate; a local cluster is rebuilt long before.
const validity = 5 * 365 * 24 * time.Hour

// CA is a certificate authority that signs the cluster's certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// CertFile and KeyFile are where it is stored.
	CertFile, KeyFile string
}

// Pair names a certificate and key file.
type Pair struct{ CertFile, KeyFile string }

// LoadOrCreateCA returns the CA stored in dir as name.crt/name.key, creating
// it when absent.
func LoadOrCreateCA(dir, name, commonName string) (*CA, error) {
	ca := &CA{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	if cert, key, err := load(ca.CertFile, ca.KeyFile); err == nil {
		ca.Cert, ca.Key = cert, key
		return ca, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	if err := write(ca.CertFile, ca.KeyFile, der, key); err != nil {
		return nil, err
	}
	ca.Cert, _ = x509.ParseCertificate(der)
	ca.Key = key
	return ca, nil
}

// Spec describes a certificate to issue.
type Spec struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Server       bool // serverAuth usage
	Client       bool // clientAuth usage
}

// Issue returns the certificate dir/name.crt and key dir/name.key signed by
// ca, creating them when absent or when the stored one does not match spec's
// names (so adding a SAN re-issues).
func (ca *CA) Issue(dir, name string, spec Spec) (Pair, error) {
	p := Pair{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	if cert, _, err := load(p.CertFile, p.KeyFile); err == nil && matches(cert, spec) {
		return p, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
	}
	if spec.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return p, fmt.Errorf("sign %s: %w", name, err)
	}
	return p, write(p.CertFile, p.KeyFile, der, key)
}

func matches(c *x509.Certificate, s Spec) bool {
	if c.Subject.CommonName != s.CommonName || len(c.DNSNames) != len(s.DNSNames) || len(c.IPAddresses) != len(s.IPs) {
		return false
	}
	for i := range s.IPs {
		if !c.IPAddresses[i].Equal(s.IPs[i]) {
			return false
		}
	}
	return time.Until(c.NotAfter) > 24*time.Hour
}

// ServiceAccountKey creates (or keeps) the RSA key pair that signs
// service-account tokens: dir/sa.key and dir/sa.pub.
func ServiceAccountKey(dir string) (Pair, error) {
	p := Pair{CertFile: filepath.Join(dir, "sa.pub"), KeyFile: filepath.Join(dir, "sa.key")}
	if _, err := os.Stat(p.KeyFile); err == nil {
		return p, nil
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return p, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return p, err
	}
	if err := os.WriteFile(p.CertFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return p, err
	}
	return p, os.WriteFile(p.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func write(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func load(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, nil, fmt.Errorf("%s or %s is not PEM", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	return cert, key, nil
}
