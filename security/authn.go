package security

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Authenticator finds the caller of an RPC: the identity of its verified
// client certificate, or of its ServiceAccount token.
type Authenticator struct {
	// Tokens reviews bearer tokens; nil refuses them.
	Tokens *TokenReviewer
	// AllowPlaintextTokens accepts tokens on connections without TLS.
	// Leave it off outside tests: a token sent in the clear can be
	// replayed by whoever reads it.
	AllowPlaintextTokens bool
}

// Authenticate returns the caller of the RPC whose server context is
// ctx, and false when it presented no identity. Its errors are status
// errors: UNAUTHENTICATED naming what is wrong with the identity
// presented, or UNAVAILABLE when the API server could not review a token.
func (a *Authenticator) Authenticate(ctx context.Context) (Caller, bool, error) {
	var (
		cert, tok   Caller
		hasCert     bool
		secure      bool
		tokenValues []string
	)
	if p, ok := peer.FromContext(ctx); ok {
		switch ai := p.AuthInfo.(type) {
		case *peerIdentity:
			if ai.err != nil {
				return Caller{}, false, status.Error(codes.Unauthenticated, "kuberpc: "+ai.err.Error())
			}
			secure, cert, hasCert = true, ai.caller, true
		case credentials.TLSInfo:
			secure = true
		}
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		tokenValues = md.Get("authorization")
	}
	token, hasToken, err := BearerToken(tokenValues)
	if err != nil {
		return Caller{}, false, status.Error(codes.Unauthenticated, "kuberpc: "+err.Error())
	}
	if !hasToken {
		return cert, hasCert, nil
	}
	switch {
	case a.Tokens == nil:
		return Caller{}, false, status.Error(codes.Unauthenticated, "kuberpc: this server does not accept tokens (AUTH_AUDIENCE is not set)")
	case !secure && !a.AllowPlaintextTokens:
		return Caller{}, false, status.Error(codes.Unauthenticated, "kuberpc: a token was sent without TLS; this server accepts tokens only over TLS")
	}
	tok, err = a.Tokens.Review(ctx, token)
	switch {
	case errors.Is(err, ErrInvalidToken):
		return Caller{}, false, status.Error(codes.Unauthenticated, "kuberpc: "+err.Error())
	case err != nil:
		return Caller{}, false, status.Error(codes.Unavailable, "kuberpc: could not authenticate the caller: "+err.Error())
	}
	if hasCert && (cert.Namespace != tok.Namespace || cert.ServiceAccount != tok.ServiceAccount) {
		return Caller{}, false, status.Error(codes.Unauthenticated, fmt.Sprintf("kuberpc: the client certificate is %s but the token is %s", cert, tok))
	}
	return tok, true, nil
}
