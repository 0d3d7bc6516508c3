package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// methodFlags are the flags of a command that calls any method of any
// service, as grpcurl does: where to send it, its requests, and where its
// descriptors come from (server reflection, else .proto files or a
// descriptor set).
type methodFlags struct {
	target, port, data, protoset string
	protos, importPaths          []string
}

// register adds the flags to c; dataUsage describes -d.
func (m *methodFlags) register(c *cobra.Command, dataUsage string) {
	c.Flags().StringVarP(&m.data, "data", "d", "{}", dataUsage)
	c.Flags().StringVar(&m.target, "target", "", "gRPC target (default: the Service of the namespace that serves SERVICE, found through grpc.health.v1)")
	c.Flags().StringVar(&m.port, "port", "", "Service port name or number to look for (default: the port named grpc, or with appProtocol h2c/grpc)")
	c.Flags().StringArrayVar(&m.protos, "proto", nil, "a .proto declaring the service, for servers without reflection (repeatable)")
	c.Flags().StringArrayVar(&m.importPaths, "import-path", nil, "directory to find --proto files and their imports in (repeatable; default .)")
	c.Flags().StringVar(&m.protoset, "protoset", "", "a FileDescriptorSet (protoc --include_imports --descriptor_set_out) declaring the service")
	c.MarkFlagsMutuallyExclusive("target", "port")
	c.MarkFlagsMutuallyExclusive("proto", "protoset")
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
