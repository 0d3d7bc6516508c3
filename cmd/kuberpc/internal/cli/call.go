package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/scaffold"
)

func callCmd(g *globals) *cobra.Command {
	var m methodFlags
	var timeout time.Duration
	var sec securityFlags
	c := &cobra.Command{
		Use:   "call SERVICE/METHOD",
		Short: "Call a method with JSON requests, through the kubernetes resolver, using server reflection or the .proto",
		Long: `Call a method with JSON requests and print each response as JSON.

-d holds one request, or, for a method that streams requests (client
streaming or bidirectional), any number of them one after another (none
at all: -d ''), as grpcurl reads them. Every request is checked before the
call starts. Responses are printed as they arrive; --timeout bounds the
whole call, streams included.

Without --target, kuberpc finds the Service that serves SERVICE: it asks
every Service of the namespace with a gRPC port (named "grpc", or with
appProtocol h2c/grpc) through grpc.health.v1 whether SERVICE is served there,
as kuberpc's runtimes answer per service. The request and response types
come from server reflection, or, for servers without it, from --proto
files (with --import-path) or a --protoset descriptor set, as grpcurl does.

From a machine that reaches the API server but not the pod network,
--port-forward connects to each pod through the API server's
port-forward, as kubectl port-forward does; the pods are still resolved
from EndpointSlices and balanced per call.`,
		Example: `  kuberpc call example.ExampleService/SayHello -d '{"name":"kuberpc"}'
  kuberpc call greeter.Greeter/SayHello -d '{"name":"x"}' --target kubernetes:///greeter.default:grpc
  kuberpc call example.ExampleService/SayHello -d @request.json
  kuberpc call example.ExampleService/SayHello -d @ < request.json
  kuberpc call example.StreamService/Greetings -d '{"id":3,"name":"x"}'
  kuberpc call example.StreamService/Chat -d '{"name":"a"} {"name":"b"}'
  kuberpc call example.ExampleService/SayHello -H 'x-tenant: blue'
  kuberpc call example.ExampleService/SayHello --port-forward
  kuberpc call example.ExampleService/SayHello --proto example.proto --import-path ./proto
  kuberpc call example.ExampleService/SayHello --tls-dir ./tls --mtls --server-identity default/example`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, method, err := splitMethod(args[0])
			if err != nil {
				return err
			}
			if timeout <= 0 {
				return usagef("--timeout %v: must be positive", timeout)
			}
			if err := m.readData(cmd.InOrStdin()); err != nil {
				return err
			}
			secOpts, err := sec.options()
			if err != nil {
				return err
			}
			headers, err := m.metadata(sec.tls.Dir != "")
			if err != nil {
				return err
			}
			dial := func(target string) (*grpc.ClientConn, error) {
				opts := append([]client.Option{client.WithRegistry(prometheus.NewRegistry()), client.WithDefaultDeadline(timeout)}, secOpts...)
				more, err := m.dialOptions(g, target)
				if err != nil {
					return nil, err
				}
				return client.Dial(target, append(opts, more...)...)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			target, err := m.givenTarget(g)
			if err != nil {
				return err
			}
			if target == "" {
				if target, err = findService(ctx, g, svc, m.port, dial); err != nil {
					return m.unreachable("kubernetes:", err)
				}
			}
			cc, err := dial(target)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx = metadata.NewOutgoingContext(ctx, headers)
			md, err := m.descriptor(ctx, cc, target, svc, method)
			if err != nil {
				return m.unreachable(target, err)
			}
			return m.unreachable(target, call(ctx, cc, md, m.data, g.out))
		},
	}
	m.register(c, "request as JSON (a method that streams requests takes several, one after another); @FILE reads them from FILE, @ from standard input")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "deadline of the call, streams included")
	sec.register(c)
	return c
}

// maxRequestData bounds the JSON requests call reads from a file or
// standard input: four times grpc-go's default largest message (4 MiB),
// room for JSON's overhead on the wire encoding.
const maxRequestData = 16 << 20

// requestData is the JSON request -d gives: the flag's value, or, for
// @FILE and @, what FILE or in holds.
func requestData(data string, in io.Reader) (string, error) {
	if !strings.HasPrefix(data, "@") {
		return data, nil
	}
	name := "standard input"
	if path := data[1:]; path != "" {
		f, err := os.Open(path)
		if err != nil {
			return "", usagef("-d %s: %v", data, err)
		}
		defer f.Close()
		in, name = f, path
	}
	b, err := io.ReadAll(io.LimitReader(in, maxRequestData+1))
	if err != nil {
		return "", usagef("-d %s: reading %s: %v", data, name, err)
	}
	if len(b) > maxRequestData {
		return "", usagef("-d %s: %s holds more than %d MiB, more than a request to send", data, name, maxRequestData>>20)
	}
	return string(b), nil
}

// call sends the requests data holds to md and writes each response to
// out as JSON, as it arrives. data holds one JSON request, or, for a
// method that streams requests, any number of them one after another (as
// grpcurl reads them); each is checked before the call starts, so a bad
// one sends nothing.
func call(ctx context.Context, cc grpc.ClientConnInterface, md protoreflect.MethodDescriptor, data string, out io.Writer) error {
	name := fmt.Sprintf("/%s/%s", md.Parent().FullName(), md.Name())
	// protojson varies its whitespace from build to build on purpose;
	// json.Indent makes it the same every time, for scripts and diffs.
	show := func(m proto.Message) error {
		b, err := protojson.Marshal(m)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err = out.Write(buf.Bytes())
		return err
	}
	// Every request is read before the call starts, so a bad one sends
	// nothing; a stream's requests are read again as they are sent.
	var send func(grpc.ClientStream) error
	if md.IsStreamingClient() {
		if _, err := eachRequest(md, data, func(proto.Message) error { return nil }); err != nil {
			return err
		}
		send = func(stream grpc.ClientStream) error {
			_, err := eachRequest(md, data, func(m proto.Message) error { return stream.SendMsg(m) })
			return err
		}
	} else {
		req, err := oneRequest(md, data)
		if err != nil {
			return err
		}
		if !md.IsStreamingServer() {
			resp := dynamicpb.NewMessage(md.Output())
			if err := cc.Invoke(ctx, name, req, resp); err != nil {
				return err
			}
			return show(resp)
		}
		send = func(stream grpc.ClientStream) error { return stream.SendMsg(req) }
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: md.IsStreamingServer(), ClientStreams: md.IsStreamingClient()}, name)
	if err != nil {
		return err
	}
	// Requests go out while responses come in: a server that answers a
	// request before it reads the next would otherwise stall both sides
	// once the flow-control windows are full.
	sent := make(chan error, 1)
	go func() {
		err := send(stream)
		if err == nil {
			err = stream.CloseSend()
		} else if errors.Is(err, io.EOF) {
			err = nil // the server ended the call: RecvMsg has its status
		}
		sent <- err
	}()
	for {
		resp := dynamicpb.NewMessage(md.Output())
		if err := stream.RecvMsg(resp); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		if err := show(resp); err != nil {
			return err
		}
	}
	return <-sent
}

// eachRequest calls fn with each request to md that data holds, in
// order (JSON values one after another, each a valid md.Input()), and
// returns how many it read. A request is made only as fn is called, so
// memory stays bounded however many data holds.
func eachRequest(md protoreflect.MethodDescriptor, data string, fn func(proto.Message) error) (int, error) {
	at := func(n int) string {
		if md.IsStreamingClient() {
			return fmt.Sprintf("request %d: ", n)
		}
		return ""
	}
	dec := json.NewDecoder(strings.NewReader(data))
	var raw json.RawMessage
	for n := 1; ; n++ {
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return n - 1, nil
		} else if err != nil {
			return n - 1, usagef("-d: %snot JSON: %v", at(n), err)
		}
		m := dynamicpb.NewMessage(md.Input())
		if err := protojson.Unmarshal(raw, m); err != nil {
			return n - 1, usagef("-d: %snot a valid %s: %v", at(n), md.Input().FullName(), err)
		}
		if err := fn(m); err != nil {
			return n, err
		}
	}
}

// The reflection services reflectFiles asks, newest first: grpc-go, the
// kuberpc runtimes and current grpc releases serve v1; older ones (the C++
// and Java gRPC Debian packages, grpcurl-era servers) only v1alpha, whose
// messages are the same on the wire.
var reflectionMethods = []string{
	reflectionpb.ServerReflection_ServerReflectionInfo_FullMethodName,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

// reflectFiles fetches, through server reflection (v1, else v1alpha),
// the file declaring symbol and its dependencies.
func reflectFiles(ctx context.Context, cc *grpc.ClientConn, symbol string) (*protoregistry.Files, error) {
	var err error
	for _, m := range reflectionMethods {
		var files *protoregistry.Files
		if files, err = reflectFilesWith(ctx, cc, m, symbol); status.Code(errors.Unwrap(err)) != codes.Unimplemented {
			return files, err
		}
	}
	return nil, err
}

func reflectFilesWith(ctx context.Context, cc *grpc.ClientConn, method, symbol string) (*protoregistry.Files, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return nil, fmt.Errorf("server reflection: %w", err)
	}
	defer stream.CloseSend()
	// ask sends r and returns the answer; an error answer is an error
	// (notFoundError for a symbol or file the server does not have).
	ask := func(r *reflectionpb.ServerReflectionRequest) (*reflectionpb.ServerReflectionResponse, error) {
		// A stream the server ended (Unimplemented, with no reflection
		// service) fails Send with io.EOF; Recv then returns its status.
		if err := stream.SendMsg(r); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp := new(reflectionpb.ServerReflectionResponse)
		if err := stream.RecvMsg(resp); err != nil {
			return nil, fmt.Errorf("server reflection: %w", err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			err := fmt.Errorf("server reflection: %s", e.GetErrorMessage())
			if codes.Code(e.GetErrorCode()) == codes.NotFound {
				err = notFoundError{err}
			}
			return nil, err
		}
		return resp, nil
	}
	fileDescs := func(r *reflectionpb.ServerReflectionRequest) ([][]byte, error) {
		resp, err := ask(r)
		return resp.GetFileDescriptorResponse().GetFileDescriptorProto(), err
	}
	raw, err := fileDescs(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
	if errors.As(err, new(notFoundError)) {
		// Say what the server has instead.
		if resp, lerr := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); lerr == nil && len(resp.GetListServicesResponse().GetService()) > 0 {
			var services []string
			for _, s := range resp.GetListServicesResponse().GetService() {
				services = append(services, s.GetName())
			}
			slices.Sort(services)
			return nil, usagef("server reflection: the server has no service %s; it serves %s", symbol, strings.Join(services, ", "))
		}
	}
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
			more, err := fileDescs(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileByFilename{FileByFilename: dep}})
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

// notFoundError is a reflection answer that the symbol asked is unknown.
type notFoundError struct{ error }

// findService returns the kubernetes:/// target of the Service in the
// namespace that serves svc: every Service with a gRPC port is asked
// through grpc.health.v1 (kuberpc's runtimes answer per service), in
// parallel.
func findService(ctx context.Context, g *globals, svc, port string, dial func(string) (*grpc.ClientConn, error)) (string, error) {
	cs, _, ns, err := g.clients()
	if err != nil {
		return "", err
	}
	list, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("list Services in %s to find %s: %w (or pass --target)", ns, svc, err)
	}
	var candidates []string
	for _, s := range list.Items {
		if s.Spec.ClusterIP == corev1.ClusterIPNone && slices.ContainsFunc(list.Items, func(o corev1.Service) bool {
			return o.Spec.ClusterIP != corev1.ClusterIPNone && s.Name == o.Name+"-headless"
		}) {
			continue // the headless twin of a Service already asked
		}
		for _, p := range s.Spec.Ports {
			grpcPort := p.Name == "grpc" || (p.AppProtocol != nil && (*p.AppProtocol == "kubernetes.io/h2c" || *p.AppProtocol == "grpc"))
			if port != "" {
				grpcPort = p.Name == port || strconv.Itoa(int(p.Port)) == port
			}
			if grpcPort {
				ref := p.Name
				if ref == "" {
					ref = strconv.Itoa(int(p.TargetPort.IntVal))
				}
				candidates = append(candidates, fmt.Sprintf("kubernetes:///%s.%s:%s", s.Name, ns, ref))
				break
			}
		}
	}
	if len(candidates) == 0 {
		return "", fmt.Errorf("no Service in namespace %s has a gRPC port (named grpc, or appProtocol h2c); pass --target", ns)
	}
	askCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	found := make([]bool, len(candidates))
	unanswered := make([]error, len(candidates))
	var wg sync.WaitGroup
	for i, target := range candidates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc, err := dial(target)
			if err != nil {
				unanswered[i] = err
				return
			}
			defer cc.Close()
			resp, err := healthpb.NewHealthClient(cc).Check(askCtx, &healthpb.HealthCheckRequest{Service: svc})
			switch {
			case status.Code(err) == codes.NotFound: // not served there
			case err != nil:
				unanswered[i] = err
			default:
				found[i] = resp.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN
			}
		}()
	}
	wg.Wait()
	var hits []string
	for i, ok := range found {
		if ok {
			hits = append(hits, candidates[i])
		}
	}
	switch len(hits) {
	case 0:
		err := fmt.Errorf("no Service in namespace %s serves %s (asked %s through grpc.health.v1); pass --target", ns, svc, strings.Join(candidates, ", "))
		for i, e := range unanswered {
			if e != nil {
				// The first that did not answer says why, such as a pod
				// network this machine does not reach.
				return "", fmt.Errorf("%w; %s did not answer: %w", err, candidates[i], e)
			}
		}
		return "", err
	case 1:
		return hits[0], nil
	}
	return "", fmt.Errorf("%s is served by several Services in namespace %s: %s; pass --target", svc, ns, strings.Join(hits, ", "))
}

// localDescriptors reads the descriptors of protos (compiled with protoc,
// finding imports in importPaths) or of a descriptor set file.
func localDescriptors(ctx context.Context, protos, importPaths []string, protoset string) (*protoregistry.Files, error) {
	var b []byte
	var err error
	if protoset != "" {
		if b, err = os.ReadFile(protoset); err != nil {
			return nil, usageError{fmt.Errorf("--protoset: %w", err)}
		}
	} else {
		if b, err = scaffold.DescriptorSet(ctx, protos, importPaths); err != nil {
			return nil, err
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(b, set); err != nil {
		return nil, usageError{fmt.Errorf("--protoset %s: not a FileDescriptorSet: %w", protoset, err)}
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, usageError{fmt.Errorf("descriptors: %w (a --protoset needs --include_imports)", err)}
	}
	return files, nil
}
