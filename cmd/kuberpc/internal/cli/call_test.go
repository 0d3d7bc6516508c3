package cli_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
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
	if code == 0 || !strings.Contains(out.String(), "server reflection") {
		t.Errorf("call of an unknown service: exit %d, %q; want the reflection error", code, out.String())
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
