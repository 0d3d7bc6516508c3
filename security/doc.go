// Package security gives a kuberpc service encryption, workload identity
// and per-method authorization without a service mesh.
//
// Three layers, each usable alone:
//
//   - Transport: TLS or mTLS from the files cert-manager (and its
//     csi-driver-spiffe) write, tls.crt, tls.key and ca.crt, re-read when
//     they change, so certificates rotate without a restart or a dropped
//     connection (ServerCredentials, ClientCredentials).
//   - Identity: a caller is a Kubernetes ServiceAccount, named by its
//     SPIFFE ID spiffe://<trust domain>/ns/<namespace>/sa/<name>. The
//     server learns it from the URI SAN of a verified client certificate,
//     or from the caller's projected ServiceAccount token, which it
//     checks with the TokenReview API for its own audience
//     (TokenReviewer). Handlers read it with CallerFrom.
//   - Authorization: a Policy allows each method to the callers it names,
//     and denies everything else.
//
// The server package wires them from its configuration (TLS_DIR,
// AUTH_AUDIENCE, AUTHZ_POLICY); the client package attaches the
// client's certificate and token (client.WithTLS, client.WithTokenFile).
package security
