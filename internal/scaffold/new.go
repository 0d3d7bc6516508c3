package scaffold

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"

	"google.golang.org/protobuf/types/descriptorpb"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Options describe the service to create.
type Options struct {
	// Name of the service and of its directory; DNS-1035.
	Name string
	// Dir is where the service's directory is created.
	Dir string
	// Proto is the .proto source; ProtoName its file name.
	Proto     []byte
	ProtoName string
	// Module is the Go module path. Default: Name.
	Module string
	// KuberpcSource is a kuberpc checkout to use instead of a published
	// version (a replace directive).
	KuberpcSource string
}

// method is one RPC as the templates need it.
type method struct {
	Name, In, Out                  string
	ClientStream, ServerStream     bool
	Service, ServerType, GoService string
}

type service struct {
	Name, GoName, Full string
	Methods            []method
}

// New creates the service module in Dir/Name: proto/, generated pb/, a
// server with one UNIMPLEMENTED stub per method, a client, a Dockerfile
// and kuberpc.yaml. It builds the module before moving it into place, so
// on any error nothing is left behind.
func New(ctx context.Context, o Options) (string, error) {
	if o.Module == "" {
		o.Module = o.Name
	}
	return create(ctx, o, func(tmp string, svcs []service) error {
		if err := writeGoMod(tmp, o); err != nil {
			return err
		}
		if err := GenGo(ctx, tmp, o.Module, o.KuberpcSource); err != nil {
			return err
		}
		data := map[string]any{"Module": o.Module, "Name": o.Name, "Services": svcs, "First": firstUnary(svcs)}
		for file, tmpl := range map[string]string{
			"cmd/server/main.go": serverTmpl, "cmd/client/main.go": clientTmpl,
		} {
			if err := writeTemplate(filepath.Join(tmp, file), tmpl, data, true); err != nil {
				return err
			}
		}
		for file, tmpl := range map[string]string{"Dockerfile": dockerfileTmpl, "kuberpc.yaml": appTmpl, ".gitignore": "/bin/\n"} {
			if err := writeTemplate(filepath.Join(tmp, file), tmpl, data, false); err != nil {
				return err
			}
		}
		for _, args := range [][]string{{"mod", "tidy"}, {"build", "./..."}, {"vet", "./..."}} {
			cmd := exec.CommandContext(ctx, "go", args...)
			cmd.Dir = tmp
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go %s in the new module: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		return nil
	})
}

// create builds a service directory for o in a temporary directory next
// to its destination: prepare writes the proto, fill the rest from the
// proto's services. Only a complete result is renamed into place; on any
// error the temporary directory is removed.
func create(ctx context.Context, o Options, fill func(tmp string, svcs []service) error) (string, error) {
	final, tmp, err := prepare(o)
	if err != nil {
		return "", err
	}
	svcs, err := protoServices(ctx, tmp, o.ProtoName)
	if err == nil {
		err = fill(tmp, svcs)
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return final, nil
}

// protoServices describes the services of the proto in dir/proto.
func protoServices(ctx context.Context, dir, protoName string) ([]service, error) {
	fd, err := describe(ctx, filepath.Join(dir, "proto"), protoName)
	if err != nil {
		return nil, err
	}
	svcs, err := services(fd)
	if err != nil {
		return nil, err
	}
	if len(svcs) == 0 {
		return nil, fmt.Errorf("%s declares no service", protoName)
	}
	return svcs, nil
}

func validName(name string) error {
	if msgs := validation.IsDNS1035Label(name); len(msgs) > 0 {
		return fmt.Errorf("name %q: %s (lower-case letters, digits and '-', starting with a letter)", name, msgs[0])
	}
	return nil
}

func writeGoMod(dir string, o Options) error {
	var b strings.Builder
	fmt.Fprintf(&b, "module %s\n\ngo 1.26\n\nrequire github.com/kuberpc/kuberpc v0.0.0\n\n", o.Module)
	b.WriteString("tool (\n\tgoogle.golang.org/grpc/cmd/protoc-gen-go-grpc\n\tgoogle.golang.org/protobuf/cmd/protoc-gen-go\n)\n")
	if o.KuberpcSource != "" {
		fmt.Fprintf(&b, "\nreplace (\n\tgithub.com/kuberpc/kuberpc => %s\n\tgithub.com/kuberpc/kuberpc/localcluster => %s\n)\n",
			o.KuberpcSource, filepath.Join(o.KuberpcSource, "localcluster"))
	}
	return os.WriteFile(filepath.Join(dir, "go.mod"), []byte(b.String()), 0o644)
}

// services lists fd's services with the Go names protoc-gen-go gives
// their messages. Messages from other files are not supported yet.
func services(fd *descriptorpb.FileDescriptorProto) ([]service, error) {
	pkg := fd.GetPackage()
	local := map[string]bool{}
	for _, m := range fd.GetMessageType() {
		local["."+pkg+"."+m.GetName()] = true
	}
	goName := func(full string) (string, error) {
		if !local[full] {
			return "", fmt.Errorf("message %s is not declared in %s; the scaffold supports messages of the same file", strings.TrimPrefix(full, "."), fd.GetName())
		}
		return camel(full[strings.LastIndexByte(full, '.')+1:]), nil
	}
	var out []service
	for _, s := range fd.GetService() {
		sv := service{Name: s.GetName(), GoName: camel(s.GetName()), Full: strings.TrimPrefix(pkg+"."+s.GetName(), ".")}
		for _, m := range s.GetMethod() {
			in, err := goName(m.GetInputType())
			if err != nil {
				return nil, err
			}
			outT, err := goName(m.GetOutputType())
			if err != nil {
				return nil, err
			}
			sv.Methods = append(sv.Methods, method{
				Name: camel(m.GetName()), In: in, Out: outT, ClientStream: m.GetClientStreaming(), ServerStream: m.GetServerStreaming(),
				Service: s.GetName(), GoService: sv.GoName, ServerType: sv.GoName + "_" + camel(m.GetName()) + "Server",
			})
		}
		out = append(out, sv)
	}
	return out, nil
}

func firstUnary(svcs []service) *method {
	for _, s := range svcs {
		for _, m := range s.Methods {
			if !m.ClientStream && !m.ServerStream {
				return &m
			}
		}
	}
	return nil
}

// camel is protoc-gen-go's CamelCase for simple names.
func camel(s string) string {
	var b strings.Builder
	up := true
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up && r >= 'a' && r <= 'z' {
			r -= 'a' - 'A'
		}
		up = false
		b.WriteRune(r)
	}
	return b.String()
}

func writeTemplate(path, tmpl string, data any, goSource bool) error {
	t, err := template.New(filepath.Base(path)).Parse(tmpl)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return err
	}
	out := b.Bytes()
	if goSource {
		if out, err = format.Source(out); err != nil {
			return errors.Join(fmt.Errorf("generated %s does not parse", path), err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}
