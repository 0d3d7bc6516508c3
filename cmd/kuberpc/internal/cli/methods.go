package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/kuberpc/kuberpc/client"
	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// methodFlags are the flags of a command that calls any method of any
// service, as grpcurl does: where to send it, its requests, and where its
// descriptors come from (server reflection, else .proto files or a
// descriptor set).
type methodFlags struct {
	target, port, data, protoset string
	protos, importPaths, headers []string
	portForward                  bool
}

// register adds the flags to c; dataUsage describes -d.
func (m *methodFlags) register(c *cobra.Command, dataUsage string) {
	c.Flags().StringVarP(&m.data, "data", "d", "{}", dataUsage)
	c.Flags().StringVar(&m.target, "target", "", "gRPC target; kubernetes:///NAME:PORT, naming no namespace, is read in -n's (default: the Service of the namespace that serves SERVICE, found through grpc.health.v1)")
	c.Flags().StringVar(&m.port, "port", "", "Service port name or number to look for (default: the port named grpc, or with appProtocol h2c/grpc)")
	c.Flags().StringArrayVar(&m.protos, "proto", nil, "a .proto declaring the service, for servers without reflection (repeatable)")
	c.Flags().StringArrayVar(&m.importPaths, "import-path", nil, "directory to find --proto files and their imports in (repeatable; default .)")
	c.Flags().StringVar(&m.protoset, "protoset", "", "a FileDescriptorSet (protoc --include_imports --descriptor_set_out) declaring the service")
	c.Flags().StringArrayVarP(&m.headers, "header", "H", nil, "metadata to send with every call, KEY: VALUE (repeatable; a key ending in -bin takes base64)")
	c.Flags().BoolVar(&m.portForward, "port-forward", false, "reach the pods through the API server's port-forward, as kubectl port-forward does (from where the pod network is not reachable); the resolver and balancer work as without it")
	c.MarkFlagsMutuallyExclusive("target", "port")
	c.MarkFlagsMutuallyExclusive("proto", "protoset")
}

// givenTarget is --target, a kubernetes:/// target that names no
// namespace given the CLI's (-n, else the kubeconfig context's), as
// kubectl reads a name: the resolver alone reads it as its own
// namespace, which outside a cluster is default.
func (m *methodFlags) givenTarget(g *globals) (string, error) {
	t, ok, err := kubernetesTarget(m.target)
	if !ok {
		return m.target, nil
	}
	if err != nil {
		return "", usageError{fmt.Errorf("--target: %w", err)}
	}
	if t.Namespace != "" {
		return m.target, nil
	}
	_, ns, err := g.restConfig()
	if err != nil {
		return "", err
	}
	t.Namespace = ns
	return "kubernetes:///" + t.String(), nil
}

// kubernetesTarget parses target when it is a kubernetes: one (ok).
func kubernetesTarget(target string) (t kuberesolver.Target, ok bool, err error) {
	endpoint, ok := strings.CutPrefix(target, "kubernetes:")
	if !ok {
		return t, false, nil
	}
	t, err = kuberesolver.ParseTarget(strings.TrimLeft(endpoint, "/"))
	return t, true, err
}

// dialOptions are what a connection to target takes from the flags: for
// a kubernetes:/// target, the resolver reading the CLI's kubeconfig,
// and with --port-forward, connections to pods through the API server.
func (m *methodFlags) dialOptions(g *globals, target string) ([]client.Option, error) {
	if !strings.HasPrefix(target, "kubernetes:") {
		if m.portForward {
			return nil, usagef("--port-forward reaches pods through the API server: it needs a kubernetes:/// target, not %q", target)
		}
		return nil, nil
	}
	opts := []client.Option{client.WithDialOptions(grpc.WithResolvers(kuberesolver.NewBuilder(kuberesolver.WithKubeconfig(g.kubeconfigPath()))))}
	if m.portForward {
		t, _, err := kubernetesTarget(target)
		if err != nil {
			return nil, err
		}
		f, err := newPodForwarder(g, t.Namespace)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithDialOptions(grpc.WithContextDialer(f.dial)))
	}
	return opts, nil
}

// unreachable adds to err, the failure of a call through target, that
// --port-forward reaches the pods when it may be that this machine does
// not reach the pod network: the connection failed, or the call waited
// for one until its deadline.
func (m *methodFlags) unreachable(target string, err error) error {
	if err == nil || m.portForward || !strings.HasPrefix(target, "kubernetes:") {
		return err
	}
	switch c := status.Code(err); {
	case c == codes.Unavailable && strings.Contains(err.Error(), "while dialing"), c == codes.DeadlineExceeded:
		return fmt.Errorf("%w\n(if the pod network is not reachable from here, --port-forward reaches the pods through the API server)", err)
	}
	return err
}

// metadata returns the -H headers as metadata, or a usage error naming
// the first that gRPC would refuse or that must not be sent: a key gRPC
// or HTTP/2 keeps for itself, and a credential (authorization) without
// TLS, which whoever reads it could replay.
func (m *methodFlags) metadata(tlsOn bool) (metadata.MD, error) {
	md := metadata.MD{}
	for _, h := range m.headers {
		k, v, ok := strings.Cut(h, ":")
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch {
		case strings.HasPrefix(strings.TrimSpace(h), ":"):
			return nil, usagef("-H %q: pseudo-headers (:authority, :path, ...) are HTTP/2's own", h)
		case !ok || k == "":
			return nil, usagef("-H %q: want KEY: VALUE", h)
		case strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "te":
			return nil, usagef("-H %q: grpc- keys are gRPC's own, as are content-type and te", h)
		case strings.IndexFunc(k, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}) >= 0:
			return nil, usagef("-H %q: a header key is lowercase letters, digits, '-', '_' and '.'", h)
		case k == "authorization" && !tlsOn:
			return nil, usagef("-H authorization needs --tls-dir: a credential sent without TLS can be replayed by whoever reads it")
		case strings.HasSuffix(k, "-bin"):
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				if b, err = base64.RawStdEncoding.DecodeString(v); err != nil {
					return nil, usagef("-H %q: not base64, as the value of a key ending in -bin is", h)
				}
			}
			v = string(b)
		case strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0:
			return nil, usagef("-H %q: a value is printable ASCII (a key ending in -bin takes base64)", h)
		}
		md.Append(k, v)
	}
	return md, nil
}

// readData replaces -d's @FILE or @ with what the file or in holds.
func (m *methodFlags) readData(in io.Reader) error {
	var err error
	m.data, err = requestData(m.data, in)
	return err
}

// descriptor returns the descriptor of svc's method: from the --proto
// files or the --protoset, else from the server reflection of cc, which
// is connected to target.
func (m *methodFlags) descriptor(ctx context.Context, cc *grpc.ClientConn, target, svc, method string) (protoreflect.MethodDescriptor, error) {
	var files *protoregistry.Files
	var err error
	if len(m.protos) > 0 || m.protoset != "" {
		files, err = localDescriptors(ctx, m.protos, m.importPaths, m.protoset)
	} else if files, err = reflectFiles(ctx, cc, svc); status.Code(errors.Unwrap(err)) == codes.Unimplemented || status.Code(err) == codes.Unimplemented {
		return nil, fmt.Errorf("the server at %s has no reflection service: pass the service's --proto files (and --import-path) or a --protoset", target)
	}
	if err != nil {
		return nil, err
	}
	return findMethod(files, svc, method)
}

// splitMethod splits "package.Service/Method" (a leading slash allowed).
func splitMethod(s string) (svc, method string, err error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(s, "/"), "/")
	if !ok || svc == "" || method == "" || !strings.Contains(svc, ".") {
		return "", "", usagef("%q: want package.Service/Method", s)
	}
	return svc, method, nil
}

// findMethod returns the descriptor of svc's method in files.
func findMethod(files *protoregistry.Files, svc, method string) (protoreflect.MethodDescriptor, error) {
	d, err := files.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", svc, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", svc)
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		var names []string
		for i := range sd.Methods().Len() {
			names = append(names, string(sd.Methods().Get(i).Name()))
		}
		return nil, usagef("service %s has no method %s; it has %s", svc, method, strings.Join(names, ", "))
	}
	return md, nil
}

// oneRequest is the one request to md, which does not stream requests,
// that data holds.
func oneRequest(md protoreflect.MethodDescriptor, data string) (proto.Message, error) {
	var req proto.Message
	n, err := eachRequest(md, data, func(m proto.Message) error { req = m; return nil })
	if err == nil && n != 1 {
		held := "none"
		if n > 1 {
			held = strconv.Itoa(n)
		}
		err = usagef("%s/%s takes one request; -d holds %s", md.Parent().FullName(), md.Name(), held)
	}
	return req, err
}
