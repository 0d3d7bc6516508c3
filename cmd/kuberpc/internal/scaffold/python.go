package scaffold

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kuberpc/kuberpc/examples/example"
)

// NewPython creates a Python grpcio service in Dir/Name from the proto:
// generated stubs, a server with one UNIMPLEMENTED stub per method on
// kuberpc's Python runtime, and kuberpc.yaml. shared holds the files every
// Python service shares with the reference server (PythonRuntime). Like
// New, it leaves nothing behind on error.
func NewPython(ctx context.Context, o Options, shared []File) (string, error) {
	if err := example.RequireToolchain("python"); err != nil {
		return "", err
	}
	return create(ctx, o, "python", func(tmp string, svcs []service) error {
		if err := writeFiles(tmp, shared); err != nil {
			return err
		}
		if err := GenPython(ctx, tmp); err != nil {
			return err
		}
		var mods []string
		for _, sv := range svcs {
			if !slices.Contains(mods, sv.PyModule) {
				mods = append(mods, sv.PyModule)
			}
		}
		data := map[string]any{"Name": o.Name, "Modules": mods, "Services": svcs}
		if err := writeTemplate(filepath.Join(tmp, "python", "server.py"), pyServerTmpl, data, false); err != nil {
			return err
		}
		if err := writeTemplate(filepath.Join(tmp, "kuberpc.yaml"), pyAppTmpl, data, false); err != nil {
			return err
		}
		check := exec.CommandContext(ctx, "/usr/bin/python3", "-m", "py_compile", filepath.Join(tmp, "python", "server.py"))
		if out, err := check.CombinedOutput(); err != nil {
			return fmt.Errorf("generated server.py does not compile: %v\n%s", err, out)
		}
		return os.RemoveAll(filepath.Join(tmp, "python", "__pycache__"))
	})
}

// PythonRuntime returns the files every Python service shares with the
// reference server (examples/example/python): kuberpc_runtime.py and the
// health and reflection protos it serves.
func PythonRuntime() []File {
	return []File{
		{Name: "python/kuberpc_runtime.py", Content: example.PythonRuntime},
		{Name: "proto/health.proto", Content: example.HealthProto},
		{Name: "proto/reflection.proto", Content: example.ReflectionProto},
	}
}

// prepare validates o and creates the temporary directory with the proto.
func prepare(o Options) (final, tmp string, err error) {
	if err := o.Validate(); err != nil {
		return "", "", err
	}
	if len(o.Protos) == 0 {
		return "", "", errors.New("no .proto file given")
	}
	seen := map[string]bool{}
	for _, f := range o.Protos {
		if !strings.HasSuffix(f.Name, ".proto") || f.Name != filepath.Base(f.Name) {
			return "", "", fmt.Errorf("proto file %q: want a .proto file name", f.Name)
		}
		if seen[f.Name] {
			return "", "", fmt.Errorf("proto file %s given twice", f.Name)
		}
		seen[f.Name] = true
	}
	final = filepath.Join(o.Dir, o.Name)
	if _, err := os.Stat(final); err == nil {
		return "", "", fmt.Errorf("%s already exists; choose another name or remove it", final)
	}
	tmp, err = os.MkdirTemp(o.Dir, ".kuberpc-new-"+o.Name+"-")
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "proto"), 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", "", err
	}
	for _, f := range o.Protos {
		if err := os.WriteFile(filepath.Join(tmp, "proto", f.Name), f.Content, 0o644); err != nil {
			os.RemoveAll(tmp)
			return "", "", err
		}
	}
	return final, tmp, nil
}

const pyServerTmpl = `#!/usr/bin/python3
"""{{.Name}}: {{range $i, $s := .Services}}{{if $i}}, {{end}}{{$s.Full}}{{end}} on Python grpcio.

Listens on $PORT (default 50051), serves grpc.health.v1 and /healthz,
/readyz on $METRICS_PORT, and drains on SIGTERM like the kuberpc Go
runtime: see kuberpc_runtime.py.
Each method answers UNIMPLEMENTED until you write it.
Run with Debian's /usr/bin/python3 (python3-grpcio).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import health_pb2_grpc  # noqa: E402
import kuberpc_runtime  # noqa: E402
{{- range .Modules}}
import {{.}}_pb2  # noqa: E402,F401
import {{.}}_pb2_grpc  # noqa: E402
{{- end}}
{{range .Services}}{{$svc := .}}

class {{.Impl}}({{.PyModule}}_pb2_grpc.{{.Name}}Servicer):
{{- range .Methods}}
    def {{.ProtoName}}(self, request{{if .ClientStream}}_iterator{{end}}, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "{{$svc.Full}}.{{.ProtoName}} is not implemented yet")
{{end}}{{end}}

def main():
    server = kuberpc_runtime.new_server()
    health = kuberpc_runtime.Health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
{{- range .Services}}
    {{.PyModule}}_pb2_grpc.add_{{.Name}}Servicer_to_server({{.Impl}}(), server)
{{- end}}
    kuberpc_runtime.run(server, health, ({{range .Services}}"{{.Full}}", {{end}}), name="{{.Name}}")


if __name__ == "__main__":
    main()
`

const pyAppTmpl = `# kuberpc.yaml: how {{.Name}} runs. Register the image for the local cluster with
#   kuberpc image build kuberpc.local/{{.Name}}:v1    # registers /usr/bin/python3 python/server.py
name: {{.Name}}
image: kuberpc.local/{{.Name}}:v1
replicas: 3
drain:
  propagationDelay: 2s
  timeout: 10s
`
