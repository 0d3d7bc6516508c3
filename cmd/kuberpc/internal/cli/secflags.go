package cli

import (
	"github.com/spf13/cobra"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/security"
)

// securityFlags are the transport security and identity of a command that
// calls a service: TLS with the files of a directory (a pod's workload
// certificate volume, or files cert-manager wrote), mTLS, the server's
// expected identity, and a ServiceAccount token.
type securityFlags struct {
	tls       security.TLSConfig
	tokenFile string
}

func (f *securityFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.tls.Dir, "tls-dir", "", "call over TLS, trusting DIR/ca.crt (with --mtls, presenting DIR/tls.crt and DIR/tls.key)")
	c.Flags().BoolVar(&f.tls.MutualTLS, "mtls", false, "present the certificate of --tls-dir (mTLS)")
	c.Flags().StringVar(&f.tls.ServerIdentity, "server-identity", "", `identity the server's certificate must carry: namespace/name, namespace/*, a SPIFFE ID or * (default: check the host name)`)
	c.Flags().StringVar(&f.tokenFile, "token-file", "", "send the ServiceAccount token in FILE (authorization: Bearer); needs --tls-dir")
}

// options returns the client options of the flags set, or a usage error.
func (f *securityFlags) options() ([]client.Option, error) {
	var opts []client.Option
	switch {
	case f.tls.Dir == "" && (f.tls.MutualTLS || f.tls.ServerIdentity != ""):
		return nil, usagef("--mtls and --server-identity need --tls-dir")
	case f.tokenFile != "" && f.tls.Dir == "":
		return nil, usagef("--token-file needs --tls-dir: a token sent without TLS can be replayed by whoever reads it")
	}
	if f.tls.Dir != "" {
		tls := f.tls
		tls.Refresh = security.DefaultRefresh // a command's call is short; the files are read once in practice
		opts = append(opts, client.WithTLS(tls))
	}
	if f.tokenFile != "" {
		opts = append(opts, client.WithTokenFile(f.tokenFile))
	}
	return opts, nil
}
