package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	v1alphagrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/cli"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
	"github.com/kuberpc/kuberpc/internal/workloadca"
	"github.com/kuberpc/kuberpc/server"
)

// TestCallWithoutReflection: against a server without reflection, call
// says so and takes the .proto (or a descriptor set) instead.
func TestCallWithoutReflection(t *testing.T) {
	target := serveExample(t, server.WithoutReflection())

	out, code := runCLI("call", "example.ExampleService/SayHello", "-d", `{"name":"x"}`, "--target", target)
	if code == 0 || !strings.Contains(out, "has no reflection service: pass the service's --proto") {
		t.Errorf("call without reflection: exit %d, %q; want an error saying to pass --proto", code, out)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "example.proto"), example.Proto, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI("call", "example.ExampleService/SayHello", "-d", `{"name":"x"}`, "--target", target,
		"--proto", "example.proto", "--import-path", dir)
	if code != 0 || !strings.Contains(out, `"Hello, x!"`) {
		t.Errorf("call with --proto: exit %d, %q; want Hello, x!", code, out)
	}

	out, code = runCLI("call", "example.ExampleService/SayHello", "--target", target, "--protoset", filepath.Join(dir, "example.proto"))
	if code == 0 || !strings.Contains(out, "not a FileDescriptorSet") {
		t.Errorf("call with a bad --protoset: exit %d, %q; want an error naming it", code, out)
	}
}

// TestCallThroughV1alphaReflection: a server that serves only the older
// grpc.reflection.v1alpha (as the C++ and Java gRPC Debian ships do) is
// called without --proto. Before, call asked v1 only and said the server
// had no reflection.
func TestCallThroughV1alphaReflection(t *testing.T) {
	gs := grpc.NewServer()
	example.RegisterExampleServiceServer(gs, example.Greeter{})
	v1alphagrpc.RegisterServerReflectionServer(gs, reflection.NewServer(reflection.ServerOptions{Services: gs}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	var out bytes.Buffer
	code := cli.Main([]string{"call", "example.ExampleService/SayHello", "-d", `{"name":"old"}`, "--target", "passthrough:///" + lis.Addr().String()}, &out, &out)
	if code != 0 || !strings.Contains(out.String(), `"Hello, old!"`) {
		t.Errorf("call through v1alpha reflection: exit %d, %q; want Hello, old!", code, out.String())
	}
	out.Reset()
	code = cli.Main([]string{"call", "example.Missing/SayHello", "--target", "passthrough:///" + lis.Addr().String()}, &out, &out)
	// The error says what the server has (before: "proto: not found").
	if code == 0 || !strings.Contains(out.String(), "server reflection: the server has no service example.Missing; it serves example.ExampleService, grpc.reflection.v1alpha.ServerReflection") {
		t.Errorf("call of an unknown service: exit %d, %q; want the reflection error, listing the services", code, out.String())
	}
}

// TestCallOverMutualTLS: call --tls-dir --mtls --server-identity reaches
// an mTLS server with the files of a workload certificate directory, and
// refuses a server that is not the identity asked for.
func TestCallOverMutualTLS(t *testing.T) {
	ca, err := workloadca.New("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dirFor := func(sa string) string {
		dir := filepath.Join(t.TempDir(), sa)
		if _, err := ca.IssueDir(dir, "spiffe://cluster.local/ns/default/sa/"+sa, time.Hour); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	cfg := server.DefaultConfig()
	cfg.Security.TLSDir, cfg.Security.MutualTLS = dirFor("example"), true
	cfg.Drain.PropagationDelay = 0
	target := serveExample(t, server.WithConfig(cfg))
	cli1 := dirFor("frontend")
	out, code := runCLI("call", "example.ExampleService/SayHello", "-d", `{"name":"x"}`, "--target", target,
		"--tls-dir", cli1, "--mtls", "--server-identity", "default/example")
	if code != 0 || !strings.Contains(out, `"Hello, x!"`) {
		t.Errorf("call over mTLS: exit %d, %q; want Hello, x!", code, out)
	}
	out, code = runCLI("call", "example.ExampleService/SayHello", "-d", `{"name":"x"}`, "--target", target, "--timeout", "3s",
		"--tls-dir", cli1, "--mtls", "--server-identity", "default/payments")
	if code == 0 || !strings.Contains(out, "not default/payments") {
		t.Errorf("call to a server with another identity: exit %d, %q; want it refused, naming the identity", code, out)
	}
}

// serveExample serves the example service with kuberpc's server, built
// with opts, on a loopback port until the test ends, and returns the
// target to call it at.
func serveExample(t *testing.T, opts ...server.Option) string {
	t.Helper()
	_, addr := replicas.Serve(t, replicas.ExampleService(example.Greeter{}), opts...)
	return "passthrough:///" + addr
}

// serveBothExamples serves the example services, ExampleService and
// StreamService, as serveExample does.
func serveBothExamples(t *testing.T) string {
	t.Helper()
	_, addr := replicas.Serve(t, func(s *server.Server) {
		example.RegisterExampleServiceServer(s, example.Greeter{})
		example.RegisterStreamServiceServer(s, example.Greeter{})
	})
	return "passthrough:///" + addr
}

// runCLI runs the kuberpc command line with args and returns what it
// printed and its exit code.
func runCLI(args ...string) (string, int) {
	var out bytes.Buffer
	code := cli.Main(args, &out, &out)
	return out.String(), code
}

// TestCallRequestFromFileOrStdin: -d @FILE reads the request from FILE
// and -d @ from standard input, for requests too large or awkward for a
// command line; a missing file, a request over the bound and a timeout
// that is not positive are named before anything is dialled.
func TestCallRequestFromFileOrStdin(t *testing.T) {
	target := serveExample(t)
	dir := t.TempDir()
	req := filepath.Join(dir, "req.json")
	if err := os.WriteFile(req, []byte(`{"name":"from a file"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI("call", "example.ExampleService/SayHello", "-d", "@"+req, "--target", target)
	if code != 0 || !strings.Contains(out, `"Hello, from a file!"`) {
		t.Errorf("call -d @FILE: exit %d, %q; want Hello, from a file!", code, out)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = stdin }()
	go func() { w.WriteString(`{"name":"stdin"}`); w.Close() }()
	out, code = runCLI("call", "example.ExampleService/SayHello", "-d", "@", "--target", target)
	if code != 0 || !strings.Contains(out, `"Hello, stdin!"`) {
		t.Errorf("call -d @: exit %d, %q; want Hello, stdin!", code, out)
	}

	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, bytes.Repeat([]byte(" "), 16<<20+1), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-d", "@" + filepath.Join(dir, "missing.json")}, "-d @" + filepath.Join(dir, "missing.json") + ": open"},
		{[]string{"-d", "@" + big}, "holds more than 16 MiB"},
		{[]string{"--timeout", "0s"}, "--timeout 0s: must be positive"},
	} {
		out, code := runCLI(append([]string{"call", "example.ExampleService/SayHello", "--target", target}, tc.args...)...)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("call %v: exit %d, %q; want an error saying %q", tc.args, code, out, tc.want)
		}
	}
}

// TestCallStreamingMethods: call makes server-streaming, client-streaming
// and bidirectional calls, as grpcurl does: -d holds one JSON request, or
// for a method that streams requests any number of them one after
// another, and each response is printed as it arrives. A request that is
// not valid is named before the stream opens, so none is sent. Before,
// call refused every streaming method.
func TestCallStreamingMethods(t *testing.T) {
	target := serveBothExamples(t)
	for _, c := range []struct {
		method, data string
		fails        bool
		want         []string // in this order
	}{
		{"Greetings", `{"id":3,"name":"s"}`, false, []string{`"Hello, s! (1/3)"`, `"Hello, s! (2/3)"`, `"Hello, s! (3/3)"`}},
		{"CollectNames", `{"name":"a"} {"name":"b"}` + "\n" + `{"name":"c"}`, false, []string{`"Hello, a, b, c!"`}},
		{"CollectNames", ``, false, []string{`"Hello, !"`}}, // no request at all
		{"Chat", "{\"name\":\"a\"}\n{\"name\":\"b\"}\n", false, []string{`"Hello, a!"`, `"Hello, b!"`}},
		{"Greetings", `{"id":1} {"id":2}`, true, []string{"example.StreamService/Greetings takes one request; -d holds 2"}},
		{"Greetings", `{"id":-1}`, true, []string{"InvalidArgument", "id -1 out of range"}},
		{"Chat", `{"name":"a"} {"nmae":"b"}`, true, []string{`-d: request 2: not a valid example.Request`, `unknown field "nmae"`}},
		{"Chat", `{"name":"a"} {"name":`, true, []string{`-d: request 2: not JSON`}},
	} {
		out, code := runCLI("call", "example.StreamService/"+c.method, "-d", c.data, "--target", target)
		if (code != 0) != c.fails {
			t.Errorf("%s -d %q: exit %d, %q", c.method, c.data, code, out)
			continue
		}
		rest := out
		for _, w := range c.want {
			i := strings.Index(rest, w)
			if i < 0 {
				t.Errorf("%s -d %q: printed %q; want %q, in this order: %q", c.method, c.data, out, w, c.want)
				break
			}
			rest = rest[i+len(w):]
		}
		if c.fails && strings.Contains(c.data, "nmae") && strings.Contains(out, "Hello") {
			t.Errorf("%s -d %q: printed %q; want no request sent", c.method, c.data, out)
		}
	}
	// The output is the same from one build to the next (protojson varies
	// its spaces on purpose), for scripts and diffs.
	out, _ := runCLI("call", "example.StreamService/Greetings", "-d", `{"id":2,"name":"s"}`, "--target", target)
	if want := "{\n  \"message\": \"Hello, s! (1/2)\"\n}\n{\n  \"message\": \"Hello, s! (2/2)\"\n}\n"; out != want {
		t.Errorf("Greetings printed %q; want %q", out, want)
	}
	// Unary methods take exactly one request, as before.
	out, code := runCLI("call", "example.ExampleService/SayHello", "-d", `{"name":"a"}{"name":"b"}`, "--target", target)
	if code == 0 || !strings.Contains(out, "takes one request; -d holds 2") {
		t.Errorf("SayHello with two requests: exit %d, %q; want it refused", code, out)
	}
	out, code = runCLI("call", "example.ExampleService/SayHello", "-d", "", "--target", target)
	if code == 0 || !strings.Contains(out, "takes one request; -d holds none") {
		t.Errorf("SayHello with no request: exit %d, %q; want it refused", code, out)
	}
}

// countingCollector counts the requests of CollectNames and, halfway
// through, measures the heap of the process (the CLI's and the server's).
type countingCollector struct {
	example.Greeter
	half int
	heap uint64
}

func (c *countingCollector) CollectNames(stream example.StreamService_CollectNamesServer) error {
	n := 0
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			return stream.SendAndClose(&example.Response{Message: strconv.Itoa(n)})
		} else if err != nil {
			return err
		}
		if n++; n == c.half {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			c.heap = ms.HeapAlloc
		}
	}
}

// TestCallStreamsRequestsInBoundedMemory: the requests of a stream are
// made as they are sent, not all before. Before, the 16 MiB -d can hold
// (5.5 million empty requests) took the CLI to 1.8 GB.
func TestCallStreamsRequestsInBoundedMemory(t *testing.T) {
	const n = 400_000
	svc := &countingCollector{half: n / 2}
	_, addr := replicas.Serve(t, func(s *server.Server) { example.RegisterStreamServiceServer(s, svc) })
	data := strings.Repeat("{}\n", n)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	out, code := runCLI("call", "example.StreamService/CollectNames", "-d", data, "--target", "passthrough:///"+addr, "--timeout", "2m")
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`"%d"`, n)) {
		t.Fatalf("exit %d, %q; want %d requests received", code, out, n)
	}
	grown := int64(svc.heap) - int64(before.HeapAlloc)
	t.Logf("%d requests in flight halfway: heap grew by %d KiB", n, grown>>10)
	if grown > 32<<20 {
		t.Errorf("halfway through %d requests the heap had grown by %d MiB; want the requests made as they are sent (< 32 MiB)", n, grown>>20)
	}
}

// headerEcho answers SayHello with the values of the request's x-tenant
// metadata.
type headerEcho struct{ example.Greeter }

func (headerEcho) SayHello(ctx context.Context, _ *example.Request) (*example.Response, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	return &example.Response{Message: "tenant=" + strings.Join(md.Get("x-tenant"), ",")}, nil
}

// TestCallAndLoadSendHeaders: -H KEY:VALUE (repeatable) sends metadata
// with every call of call and load, as grpcurl's -H does; a header gRPC
// or HTTP/2 reserves, a malformed one, and authorization without TLS
// (as --token-file) are named before anything is sent.
func TestCallAndLoadSendHeaders(t *testing.T) {
	_, addr := replicas.Serve(t, replicas.ExampleService(headerEcho{}))
	target := "passthrough:///" + addr
	out, code := runCLI("call", "example.ExampleService/SayHello", "--target", target, "-H", "X-Tenant: blue", "-H", "x-tenant:green")
	if code != 0 || !strings.Contains(out, `"tenant=blue,green"`) {
		t.Errorf("call -H: exit %d, %q; want both values of x-tenant", code, out)
	}
	out, code = runCLI("load", "--rate", "20", "--duration", "500ms", "--target", target, "-H", "x-tenant: blue")
	if code != 0 || !strings.Contains(out, "unary calls: 10, failed 0") {
		t.Errorf("load -H: exit %d, %q", code, out)
	}
	for _, c := range []struct{ header, want string }{
		{"x-tenant", `-H "x-tenant": want KEY: VALUE`},
		{"grpc-timeout: 1S", `-H "grpc-timeout: 1S": grpc- keys are gRPC's own`},
		{":authority: x", `-H ":authority: x": pseudo-headers (:authority, :path, ...) are HTTP/2's own`},
		{"bad key: x", `-H "bad key: x": a header key is lowercase letters`},
		{"x-tenant: caf\u00e9", `-H "x-tenant: café": a value is printable ASCII (a key ending in -bin takes base64)`},
		{"x-data-bin: !!", `-H "x-data-bin: !!": not base64`},
		{"authorization: Bearer x", "-H authorization needs --tls-dir"},
	} {
		for _, verb := range [][]string{{"call", "example.ExampleService/SayHello"}, {"load", "--duration", "100ms"}} {
			out, code := runCLI(append(verb, "--target", target, "-H", c.header)...)
			if code != 2 || !strings.Contains(out, c.want) {
				t.Errorf("%s -H %q: exit %d, %q; want a usage error saying %q", verb[0], c.header, code, out, c.want)
			}
		}
	}
}
