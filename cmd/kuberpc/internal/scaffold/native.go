package scaffold

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"unicode"

	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/kuberpc/kuberpc/examples/example"
)

// CppRuntime returns the files every C++ service shares with the
// reference server (examples/example/cpp): the runtime, and its Makefile
// with the service's proto/ as the proto directory.
func CppRuntime() []File {
	mk := strings.NewReplacer("PROTO_DIR ?= ..\n", "PROTO_DIR ?= ../proto\n", "HEALTH_PROTO_DIR ?= ../python/proto\n", "HEALTH_PROTO_DIR ?= ../proto\n").Replace(string(example.CppMakefile))
	return []File{
		{Name: "cpp/kuberpc_runtime.h", Content: example.CppRuntimeHeader},
		{Name: "cpp/kuberpc_runtime.cc", Content: example.CppRuntimeSource},
		{Name: "cpp/Makefile", Content: []byte(mk)},
		{Name: "proto/health.proto", Content: example.HealthProto},
	}
}

// JavaRuntime returns the files every Java service shares with the
// reference server (examples/example/java).
func JavaRuntime() []File {
	return []File{
		{Name: "java/kuberpc/KuberpcRuntime.java", Content: example.JavaRuntime},
		{Name: "java/build.sh", Content: example.JavaBuild},
		{Name: "proto/health.proto", Content: example.HealthProto},
		{Name: "proto/reflection.proto", Content: example.ReflectionProto},
	}
}

// NewCpp creates a C++ gRPC service in Dir/Name from the proto: a server
// with one UNIMPLEMENTED stub per method on kuberpc's C++ runtime, a
// client, a Makefile against Debian's gRPC, and kuberpc.yaml. shared
// holds the files every C++ service shares (CppRuntime). It builds the
// service (into cpp/build) before moving it into place; on any error
// nothing is left.
func NewCpp(ctx context.Context, o Options, shared []File) (string, error) {
	tmpls := map[string]string{"cpp/server.cc": cppServerTmpl, "cpp/client.cc": cppClientTmpl, "kuberpc.yaml": cppAppTmpl, ".gitignore": "/cpp/build/\n"}
	return newNative(ctx, o, "cpp", shared, tmpls, func(svcs []service) (map[string]any, error) {
		var headers []string
		for _, sv := range svcs {
			if h := sv.File + ".grpc.pb.h"; !slices.Contains(headers, h) {
				headers = append(headers, h)
			}
		}
		return map[string]any{"Headers": headers}, nil
	}, GenCpp)
}

// newNative is NewCpp and NewJava: it checks lang's toolchain, writes the
// shared files and the templates (with the data of the services, which
// data adds to), and builds the result with gen, all before create moves
// it into place.
func newNative(ctx context.Context, o Options, lang string, shared []File, tmpls map[string]string,
	data func([]service) (map[string]any, error), gen func(context.Context, string) error) (string, error) {
	if err := example.RequireToolchain(lang); err != nil {
		return "", err
	}
	return create(ctx, o, lang, func(tmp string, svcs []service) error {
		if err := writeFiles(tmp, shared); err != nil {
			return err
		}
		d, err := data(svcs)
		if err != nil {
			return err
		}
		d["Name"], d["Services"], d["First"] = o.Name, svcs, firstUnary(svcs)
		for file, tmpl := range tmpls {
			if err := writeTemplate(filepath.Join(tmp, file), tmpl, d, false); err != nil {
				return err
			}
		}
		return gen(ctx, tmp)
	})
}

// GenCpp generates the C++ code of modDir/proto/*.proto and builds the
// server and client into modDir/cpp/build, with the service's Makefile.
func GenCpp(ctx context.Context, modDir string) error {
	if err := example.RequireToolchain("cpp"); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "make", "-C", filepath.Join(modDir, "cpp"), fmt.Sprintf("-j%d", max(2, runtime.NumCPU())))
	if out, err := cmd.CombinedOutput(); err != nil {
		return buildError("make", out, err)
	}
	return nil
}

// NewJava creates a Java gRPC service in Dir/Name from the proto: a
// server with one UNIMPLEMENTED stub per method on kuberpc's Java
// runtime, a client, build.sh against Debian's jars, and kuberpc.yaml.
// shared holds the files every Java service shares (JavaRuntime).
// It builds the service (into java/build) before moving it into place;
// on any error nothing is left.
func NewJava(ctx context.Context, o Options, shared []File) (string, error) {
	tmpls := map[string]string{"java/server/Server.java": javaServerTmpl, "java/client/Client.java": javaClientTmpl, "kuberpc.yaml": javaAppTmpl, ".gitignore": "/java/build/\n"}
	return newNative(ctx, o, "java", shared, tmpls, func(svcs []service) (map[string]any, error) {
		for _, sv := range svcs {
			if sv.JavaGrpc == "" {
				return nil, fmt.Errorf("service %s: its file declares no package and no java_package option, and Java cannot use classes of the default package from the server's; add one", sv.Full)
			}
		}
		return map[string]any{}, nil
	}, GenJava)
}

// GenJava generates the Java code of modDir/proto/*.proto and compiles
// the server and client into modDir/java/build, with the service's
// build.sh.
func GenJava(ctx context.Context, modDir string) error {
	if err := example.RequireToolchain("java"); err != nil {
		return err
	}
	abs, err := filepath.Abs(modDir)
	if err != nil {
		return err
	}
	proto := filepath.Join(abs, "proto")
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(abs, "java", "build.sh"), filepath.Join(abs, "java", "build"), proto, proto)
	if out, err := cmd.CombinedOutput(); err != nil {
		return buildError("java/build.sh", out, err)
	}
	return nil
}

// buildError quotes a build's output; protoc's part names file:line.
func buildError(what string, out []byte, err error) error {
	msg := strings.TrimSpace(string(out))
	if strings.Contains(msg, ".proto:") {
		return fmt.Errorf("%w:\n%s", ErrProtoc, msg)
	}
	return errors.Join(fmt.Errorf("%s failed: %v", what, err), errors.New(msg))
}

func writeFiles(dir string, files []File) error {
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(f.Name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, f.Content, mode); err != nil {
			return err
		}
	}
	return nil
}

// fileOf returns the file of set that declares the message full
// (".pkg.Outer.Inner"), and the message's path inside it ("Outer.Inner").
func fileOf(set *descriptorpb.FileDescriptorSet, full string) (*descriptorpb.FileDescriptorProto, string) {
	var best *descriptorpb.FileDescriptorProto
	var rest string
	for _, fd := range set.GetFile() {
		prefix := "."
		if fd.GetPackage() != "" {
			prefix = "." + fd.GetPackage() + "."
		}
		if !strings.HasPrefix(full, prefix) || (best != nil && len(prefix) <= len(best.GetPackage())+2) {
			continue
		}
		path := strings.TrimPrefix(full, prefix)
		if declares(fd.GetMessageType(), path) {
			best, rest = fd, path
		}
	}
	return best, rest
}

func declares(msgs []*descriptorpb.DescriptorProto, path string) bool {
	name, nested, _ := strings.Cut(path, ".")
	for _, m := range msgs {
		if m.GetName() == name {
			return nested == "" || declares(m.GetNestedType(), nested)
		}
	}
	return false
}

// cppType is the C++ name protoc gives a message: ::pkg::Outer_Inner.
func cppType(set *descriptorpb.FileDescriptorSet, full string) (string, error) {
	fd, path := fileOf(set, full)
	if fd == nil {
		return "", fmt.Errorf("message %s is declared in none of the protos", strings.TrimPrefix(full, "."))
	}
	ns := ""
	if fd.GetPackage() != "" {
		ns = "::" + strings.ReplaceAll(fd.GetPackage(), ".", "::")
	}
	return ns + "::" + strings.ReplaceAll(path, ".", "_"), nil
}

// javaPackage is the Java package of fd's generated classes.
func javaPackage(fd *descriptorpb.FileDescriptorProto) string {
	if p := fd.GetOptions().GetJavaPackage(); p != "" {
		return p
	}
	return fd.GetPackage()
}

// javaType is the Java name protoc gives a message: its package, the
// file's outer class unless java_multiple_files, then Outer.Inner.
func javaType(set *descriptorpb.FileDescriptorSet, full string) (string, error) {
	fd, path := fileOf(set, full)
	if fd == nil {
		return "", fmt.Errorf("message %s is declared in none of the protos", strings.TrimPrefix(full, "."))
	}
	var parts []string
	if p := javaPackage(fd); p != "" {
		parts = append(parts, p)
	}
	if !fd.GetOptions().GetJavaMultipleFiles() {
		parts = append(parts, javaOuterClass(fd))
	}
	return strings.Join(append(parts, path), "."), nil
}

// javaOuterClass is protoc's outer class name for fd: java_outer_classname,
// else the file's base name in CamelCase, with "OuterClass" added when a
// message, enum or service of the file has that name.
func javaOuterClass(fd *descriptorpb.FileDescriptorProto) string {
	if n := fd.GetOptions().GetJavaOuterClassname(); n != "" {
		return n
	}
	base := strings.TrimSuffix(filepath.Base(fd.GetName()), ".proto")
	var b strings.Builder
	up := true
	for _, r := range base {
		switch {
		case unicode.IsLetter(r):
			if up {
				r = unicode.ToUpper(r)
			}
			b.WriteRune(r)
			up = false
		case unicode.IsDigit(r):
			b.WriteRune(r)
			up = true
		default:
			up = true
		}
	}
	name := b.String()
	for _, m := range fd.GetMessageType() {
		if m.GetName() == name {
			return name + "OuterClass"
		}
	}
	for _, e := range fd.GetEnumType() {
		if e.GetName() == name {
			return name + "OuterClass"
		}
	}
	for _, s := range fd.GetService() {
		if s.GetName() == name {
			return name + "OuterClass"
		}
	}
	return name
}

// javaMethod is grpc-java's method name: lower camel case.
func javaMethod(name string) string {
	c := camel(name)
	if c == "" {
		return c
	}
	c = strings.ToLower(c[:1]) + c[1:]
	if slices.Contains(javaKeywords, c) {
		c += "_" // as grpc-java's generator names it
	}
	return c
}

const cppServerTmpl = `// {{.Name}}: {{range $i, $s := .Services}}{{if $i}}, {{end}}{{$s.Full}}{{end}} on C++ gRPC.
//
// Listens on $PORT (default 50051), serves grpc.health.v1, reflection,
// /healthz, /readyz and /metrics on $METRICS_PORT, and drains on SIGTERM
// like the kuberpc Go runtime: see kuberpc_runtime.h.
// Each method answers UNIMPLEMENTED until you write it.
// Build: make -C cpp (Debian's libgrpc++-dev, protobuf-compiler-grpc).
#include <grpcpp/grpcpp.h>

#include "kuberpc_runtime.h"
{{- range .Headers}}
#include "{{.}}"
{{- end}}

namespace {
{{range .Services}}{{$svc := .}}
class {{.Impl}}Impl final : public {{.CppNamespace}}::{{.Name}}::Service {
{{- range .Methods}}
  grpc::Status {{.ProtoName}}(grpc::ServerContext* ctx, {{if and .ClientStream .ServerStream}}grpc::ServerReaderWriter<{{.CppOut}}, {{.CppIn}}>* stream{{else if .ClientStream}}grpc::ServerReader<{{.CppIn}}>* reader, {{.CppOut}}* response{{else if .ServerStream}}const {{.CppIn}}* request, grpc::ServerWriter<{{.CppOut}}>* writer{{else}}const {{.CppIn}}* request, {{.CppOut}}* response{{end}}) override {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "{{$svc.Full}}.{{.ProtoName}} is not implemented yet");
  }
{{- end}}
};
{{end}}
}  // namespace

int main() {
  kuberpc::Runtime rt;
{{- range $i, $s := .Services}}
  {{$s.Impl}}Impl svc{{$i}};
  rt.Builder().RegisterService(&svc{{$i}});
{{- end}}
  return rt.Run({ {{- range $i, $s := .Services}}{{if $i}}, {{end}}"{{$s.Full}}"{{end -}} }, "{{.Name}}");
}
`

const cppClientTmpl = `// Calls {{if .First}}{{.First.Service}}.{{.First.ProtoName}}{{else}}nothing (the protos have no unary method){{end}} at ADDRESS (argv[1], host:port)
// with an empty request and prints the response or the status.
#include <chrono>
#include <cstdio>

#include <grpcpp/grpcpp.h>
{{- range .Headers}}
#include "{{.}}"
{{- end}}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: client HOST:PORT\n");
    return 2;
  }
{{- if .First}}
  auto stub = {{.First.CppNamespace}}::{{.First.Service}}::NewStub(grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  {{.First.CppIn}} req;
  {{.First.CppOut}} resp;
  grpc::Status st = stub->{{.First.ProtoName}}(&ctx, req, &resp);
  if (!st.ok()) {
    std::printf("{{.First.Service}}.{{.First.ProtoName}}: status %d: %s\n", st.error_code(), st.error_message().c_str());
    return 1;
  }
  std::printf("%s\n", resp.ShortDebugString().c_str());
{{- else}}
  (void)argv;
{{- end}}
  return 0;
}
`

const cppAppTmpl = `# kuberpc.yaml: how {{.Name}} runs. Build and register the image for the local cluster with
#   kuberpc image build kuberpc.local/{{.Name}}:v1    # runs make -C cpp, registers cpp/build/server
name: {{.Name}}
image: kuberpc.local/{{.Name}}:v1
replicas: 3
drain:
  propagationDelay: 2s
  timeout: 10s
`

const javaServerTmpl = `package server;

import io.grpc.BindableService;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.util.List;
import kuberpc.KuberpcRuntime;

/**
 * {{.Name}}: {{range $i, $s := .Services}}{{if $i}}, {{end}}{{$s.Full}}{{end}} on Java gRPC.
 *
 * <p>Listens on $PORT (default 50051), serves grpc.health.v1, /healthz, /readyz and /metrics on
 * $METRICS_PORT, and drains on SIGTERM like the kuberpc Go runtime: see
 * kuberpc/KuberpcRuntime.java. Each method answers UNIMPLEMENTED until you write it. Build:
 * java/build.sh java/build (Debian's libgrpc-java).
 */
public final class Server {
{{- range .Services}}{{$svc := .}}
  static final class {{.Impl}}Impl extends {{.JavaGrpc}}.{{.Name}}ImplBase {
{{- range .Methods}}
    @Override
    public {{if .ClientStream}}StreamObserver<{{.JavaIn}}>{{else}}void{{end}} {{.JavaName}}({{if not .ClientStream}}{{.JavaIn}} request, {{end}}StreamObserver<{{.JavaOut}}> responses) {
      responses.onError(Status.UNIMPLEMENTED.withDescription("{{$svc.Full}}.{{.ProtoName}} is not implemented yet").asRuntimeException());
{{- if .ClientStream}}
      return new StreamObserver<{{.JavaIn}}>() {
        @Override
        public void onNext({{.JavaIn}} request) {}

        @Override
        public void onError(Throwable t) {}

        @Override
        public void onCompleted() {}
      };
{{- end}}
    }
{{- end}}
  }
{{end}}
  public static void main(String[] args) throws Exception {
    KuberpcRuntime.run(List.<BindableService>of({{range $i, $s := .Services}}{{if $i}}, {{end}}new {{$s.Impl}}Impl(){{end}}),
        List.of({{range $i, $s := .Services}}{{if $i}}, {{end}}"{{$s.Full}}"{{end}}), "{{.Name}}");
  }
}
`

const javaClientTmpl = `package client;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.StatusRuntimeException;
import java.util.concurrent.TimeUnit;

/**
 * Calls {{if .First}}{{.First.Service}}.{{.First.ProtoName}}{{else}}nothing (the protos have no unary method){{end}} at ADDRESS (args[0], host:port) with an empty request and
 * prints the response or the status.
 */
public final class Client {
  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: client HOST:PORT");
      System.exit(2);
    }
    ManagedChannel ch = ManagedChannelBuilder.forTarget(args[0]).usePlaintext().build();
    try {
{{- if .First}}
      System.out.println({{.First.JavaGrpc}}.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS)
          .{{.First.JavaName}}({{.First.JavaIn}}.getDefaultInstance()));
    } catch (StatusRuntimeException e) {
      System.out.println("{{.First.Service}}.{{.First.ProtoName}}: " + e.getStatus());
      System.exit(1);
{{- end}}
    } finally {
      ch.shutdownNow();
    }
  }
}
`

const javaAppTmpl = `# kuberpc.yaml: how {{.Name}} runs. Build and register the image for the local cluster with
#   kuberpc image build kuberpc.local/{{.Name}}:v1    # runs java/build.sh, registers java/build/server
name: {{.Name}}
image: kuberpc.local/{{.Name}}:v1
replicas: 3
drain:
  propagationDelay: 2s
  timeout: 10s
`
