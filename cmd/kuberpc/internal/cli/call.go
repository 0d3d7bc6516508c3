package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kuberpc/kuberpc/client"
	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

func callCmd(g *globals) *cobra.Command {
	var data, target, port string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "call SERVICE/METHOD",
		Short: "Call a unary method with a JSON request, through the kubernetes resolver, using server reflection",
		Example: `  kuberpc call example.ExampleService/SayHello -d '{"name":"kuberpc"}'
  kuberpc call greeter.Greeter/SayHello -d '{"name":"x"}' --target kubernetes:///greeter.default:grpc`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, method, ok := strings.Cut(strings.TrimPrefix(args[0], "/"), "/")
			if !ok || svc == "" || method == "" || !strings.Contains(svc, ".") {
				return usagef("%q: want package.Service/Method", args[0])
			}
			if target == "" {
				_, ns, err := g.restConfig()
				if err != nil {
					return err
				}
				if g.namespace != "" {
					ns = g.namespace
				}
				name := svc[strings.LastIndexByte(svc, '.')+1:]
				target = fmt.Sprintf("kubernetes:///%s.%s:%s", strings.ToLower(name), ns, port)
			}
			opts := []client.Option{client.WithRegistry(prometheus.NewRegistry()), client.WithDefaultDeadline(timeout)}
			if strings.HasPrefix(target, "kubernetes:") {
				opts = append(opts, client.WithDialOptions(grpc.WithResolvers(kuberesolver.NewBuilder(kuberesolver.WithKubeconfig(g.kubeconfigPath())))))
			}
			cc, err := client.Dial(target, opts...)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			out, err := call(ctx, cc, svc, method, data)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.out, out)
			return nil
		},
	}
	c.Flags().StringVarP(&data, "data", "d", "{}", "request as JSON")
	c.Flags().StringVar(&target, "target", "", "gRPC target (default kubernetes:///<service>.<namespace>:<port>)")
	c.Flags().StringVar(&port, "port", "grpc", "Service port name or number, for the default target")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "deadline of the call")
	c.MarkFlagsMutuallyExclusive("target", "port")
	return c
}

// call resolves svc through server reflection, converts data to the
// request type, calls method and returns the response as JSON.
func call(ctx context.Context, cc *grpc.ClientConn, svc, method, data string) (string, error) {
	files, err := reflectFiles(ctx, cc, svc)
	if err != nil {
		return "", err
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return "", fmt.Errorf("service %s: %w", svc, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return "", fmt.Errorf("%s is not a service", svc)
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		var names []string
		for i := range sd.Methods().Len() {
			names = append(names, string(sd.Methods().Get(i).Name()))
		}
		return "", usagef("service %s has no method %s; it has %s", svc, method, strings.Join(names, ", "))
	}
	if md.IsStreamingClient() || md.IsStreamingServer() {
		return "", usagef("%s/%s is a streaming method; kuberpc call makes unary calls", svc, method)
	}
	req := dynamicpb.NewMessage(md.Input())
	if err := protojson.Unmarshal([]byte(data), req); err != nil {
		return "", usagef("-d: not a valid %s: %v", md.Input().FullName(), err)
	}
	resp := dynamicpb.NewMessage(md.Output())
	if err := cc.Invoke(ctx, "/"+svc+"/"+method, req, resp); err != nil {
		return "", err
	}
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(resp)
	return string(b), err
}

// reflectFiles fetches, through grpc.reflection.v1, the file declaring
// symbol and its dependencies.
func reflectFiles(ctx context.Context, cc *grpc.ClientConn, symbol string) (*protoregistry.Files, error) {
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("server reflection: %w", err)
	}
	defer stream.CloseSend()
	ask := func(r *reflectionpb.ServerReflectionRequest) ([][]byte, error) {
		if err := stream.Send(r); err != nil {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("server reflection: %w", err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			return nil, fmt.Errorf("server reflection: %s", e.GetErrorMessage())
		}
		return resp.GetFileDescriptorResponse().GetFileDescriptorProto(), nil
	}
	raw, err := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
	if err != nil {
		return nil, err
	}
	fds := map[string]*descriptorpb.FileDescriptorProto{}
	queue := raw
	for len(queue) > 0 {
		b := queue[0]
		queue = queue[1:]
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(b, fd); err != nil {
			return nil, err
		}
		if _, ok := fds[fd.GetName()]; ok {
			continue
		}
		fds[fd.GetName()] = fd
		for _, dep := range fd.GetDependency() {
			if _, ok := fds[dep]; ok {
				continue
			}
			more, err := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileByFilename{FileByFilename: dep}})
			if err != nil {
				return nil, err
			}
			queue = append(queue, more...)
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range fds {
		set.File = append(set.File, fd)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, errors.Join(errors.New("server reflection returned inconsistent descriptors"), err)
	}
	return files, nil
}
