package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const greeterProto = `syntax = "proto3";
package demo;

message HelloRequest { string name = 1; int32 count = 2; }
message HelloReply { string message = 1; }

service Greeter {
  rpc SayHello (HelloRequest) returns (HelloReply);
  rpc Chat (stream HelloRequest) returns (stream HelloReply);
}
`

// TestNewToRunningService is the whole CLI path: new (with a streaming
// method), one line of implementation, image build, deploy on 3 replicas,
// call through the kubernetes resolver, a second version, rollback.
func TestNewToRunningService(t *testing.T) {
	ns := env.Namespace(t)
	dir := t.TempDir()
	protoFile := filepath.Join(dir, "greeter.proto")
	if err := os.WriteFile(protoFile, []byte(greeterProto), 0o644); err != nil {
		t.Fatal(err)
	}
	mustKuberpc(t, "new", "greeter", "--proto", protoFile, "--dir", dir)
	mod := filepath.Join(dir, "greeter")
	implement := func(greeting string) {
		main := filepath.Join(mod, "cmd", "server", "main.go")
		b, err := os.ReadFile(main)
		if err != nil {
			t.Fatal(err)
		}
		stub := `return nil, status.Error(codes.Unimplemented, "demo.Greeter.SayHello is not implemented yet")`
		if greeting != "Hello" {
			stub = `return &pb.HelloReply{Message: "Hello, " + req.GetName() + " from " + os.Getenv("POD_NAME")}, nil`
		}
		src := strings.Replace(string(b), stub, `return &pb.HelloReply{Message: "`+greeting+`, " + req.GetName() + " from " + os.Getenv("POD_NAME")}, nil`, 1)
		if src == string(b) {
			t.Fatalf("stub not found in %s", main)
		}
		if err := os.WriteFile(main, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	implement("Hello")
	mustKuberpc(t, "image", "build", "kuberpc.local/greeter:v1", "--dir", mod, "--pkg", "./cmd/server")
	app := filepath.Join(mod, "kuberpc.yaml")
	mustKuberpc(t, "deploy", "-f", app, "-n", ns)
	env.WaitReady(t, ns, "app.kubernetes.io/name=greeter", 3)

	call := func() string {
		return mustKuberpc(t, "call", "demo.Greeter/SayHello", "-d", `{"name":"e2e"}`, "-n", ns)
	}
	pods := map[string]bool{}
	for range 12 {
		out := call()
		i := strings.Index(out, "Hello, e2e from greeter-")
		if i < 0 {
			t.Fatalf("kuberpc call printed %q", out)
		}
		pods[strings.Fields(out[i+len("Hello, e2e from "):])[0]] = true
	}
	if len(pods) < 2 {
		t.Errorf("12 calls reached %d pod(s) %v; want them spread over the 3 replicas", len(pods), pods)
	}

	implement("Hi")
	mustKuberpc(t, "image", "build", "kuberpc.local/greeter:v2", "--dir", mod, "--pkg", "./cmd/server")
	b, _ := os.ReadFile(app)
	os.WriteFile(app, []byte(strings.Replace(string(b), "greeter:v1", "greeter:v2", 1)), 0o644)
	mustKuberpc(t, "deploy", "-f", app, "-n", ns)
	if out := call(); !strings.Contains(out, "Hi, e2e") {
		t.Errorf("after deploying v2, call printed %q", out)
	}
	mustKuberpc(t, "rollback", "greeter", "-n", ns)
	env.WaitReady(t, ns, "app.kubernetes.io/name=greeter", 3)
	if out := call(); !strings.Contains(out, "Hello, e2e") {
		t.Errorf("after rollback, call printed %q", out)
	}
}
