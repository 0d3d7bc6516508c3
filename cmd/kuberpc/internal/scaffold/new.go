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
	"slices"
	"strings"
	"text/template"

	"golang.org/x/mod/module"
	"google.golang.org/protobuf/types/descriptorpb"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Options describe the service to create.
type Options struct {
	// Name of the service and of its directory; DNS-1035.
	Name string
	// Dir is where the service's directory is created.
	Dir string
	// Protos are the .proto files, which may import each other and the
	// well-known types (google/protobuf/*.proto). Every service they
	// declare is scaffolded.
	Protos []File
	// Module is the Go module path. Default: Name.
	Module string
	// KuberpcVersion is the kuberpc library version the module requires,
	// e.g. "v0.2.0". Required for Go unless KuberpcSource is set.
	KuberpcVersion string
	// KuberpcSource is a kuberpc checkout to build against instead of a
	// published version (a replace directive), for developing kuberpc.
	KuberpcSource string
}

// File is a named file's content.
type File struct {
	Name    string
	Content []byte
}

// ProtoNames lists the proto file names, comma-separated.
func (o Options) ProtoNames() string { return strings.Join(o.ProtoFiles(), ", ") }

// ProtoFiles lists the proto file names.
func (o Options) ProtoFiles() []string {
	var names []string
	for _, f := range o.Protos {
		names = append(names, f.Name)
	}
	return names
}

// method is one RPC as the templates need it.
type method struct {
	// In and Out are Go type names as the server refers to them
	// ("pb.Request", "emptypb.Empty"); InImport and OutImport their
	// packages when not pb.
	Name, In, Out                  string
	InImport, OutImport            string
	ClientStream, ServerStream     bool
	Service, ServerType, GoService string
	// ProtoName is the method's name in the proto, which the C++ and
	// Python generators keep.
	ProtoName string
	// CppIn and CppOut are the C++ message types ("::pkg::Request"),
	// CppNamespace the service's namespace.
	CppIn, CppOut, CppNamespace string
	// JavaIn and JavaOut are the Java message types, JavaName the
	// method's Java name, JavaGrpc the service's generated class.
	JavaIn, JavaOut, JavaName, JavaGrpc string
}

type service struct {
	Name, GoName, Full string
	// Impl names the class that implements the service in the Python,
	// C++ and Java servers: GoName, or, when services of two proto
	// packages share a name, the full name in camel case ("AcmeAOrders").
	Impl string
	// PyModule is the Python module protoc generates for the service's
	// file, without the _pb2 suffix; File is the same base name, for the
	// C++ headers.
	PyModule, File string
	// CppNamespace is the service's C++ namespace ("::pkg"); JavaGrpc its
	// generated Java class ("pkg.ServiceGrpc"), empty when the file has
	// no Java package.
	CppNamespace, JavaGrpc string
	Methods                []method
}

// New creates the service module in Dir/Name: proto/, generated pb/, a
// server with one UNIMPLEMENTED stub per method, a client, a Dockerfile
// and kuberpc.yaml. It builds the module before moving it into place, so
// on any error nothing is left behind.
func New(ctx context.Context, o Options) (string, error) {
	if o.Module == "" {
		o.Module = o.Name
	}
	return create(ctx, o, "go", func(tmp string, svcs []service) error {
		if err := writeGoMod(tmp, o); err != nil {
			return err
		}
		if err := GenGo(ctx, tmp, o.Module); err != nil {
			return err
		}
		data := map[string]any{"Module": o.Module, "Name": o.Name, "Services": svcs, "First": firstUnary(svcs), "Imports": goImports(svcs)}
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

// create builds a service directory for o in lang in a temporary
// directory next to its destination: prepare writes the proto, fill the
// rest from the proto's services. Only a complete result is renamed into
// place; on any error the temporary directory is removed.
func create(ctx context.Context, o Options, lang string, fill func(tmp string, svcs []service) error) (string, error) {
	final, tmp, err := prepare(o)
	if err != nil {
		return "", err
	}
	svcs, err := protoServices(ctx, tmp, o.ProtoFiles(), lang)
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

// protoServices describes the services of the named protos in dir/proto,
// once it has checked that lang's generators can take their names.
func protoServices(ctx context.Context, dir string, names []string, lang string) ([]service, error) {
	set, err := describe(ctx, filepath.Join(dir, "proto"), names)
	if err != nil {
		return nil, err
	}
	if err := unescaped(set, names, lang); err != nil {
		return nil, err
	}
	svcs, err := services(set, names)
	if err != nil {
		return nil, err
	}
	if len(svcs) == 0 {
		return nil, fmt.Errorf("%s declares no service", strings.Join(names, ", "))
	}
	return svcs, nil
}

// goNameClash reports two declarations of the user's protos that
// protoc-gen-go and protoc-gen-go-grpc would give the same name in
// package pb, where the scaffold generates every proto: top-level
// messages and enums keep their names, a service S declares SClient and
// SServer, and a nested name is its parent's, an underscore and its own,
// so two top-level names that differ keep the nested ones apart. protoc
// already refuses two declarations of one full name; this catches the
// same name in two proto packages, which only Go puts in one scope.
func goNameClash(set *descriptorpb.FileDescriptorSet, user []string) error {
	type decl struct{ goName, full, file string }
	seen := map[string]decl{}
	for _, fd := range set.GetFile() {
		if !slices.Contains(user, fd.GetName()) {
			continue
		}
		prefix := ""
		if fd.GetPackage() != "" {
			prefix = fd.GetPackage() + "."
		}
		var decls []decl
		add := func(goName, name string) { decls = append(decls, decl{goName, prefix + name, fd.GetName()}) }
		for _, m := range fd.GetMessageType() {
			add(camel(m.GetName()), m.GetName())
		}
		for _, e := range fd.GetEnumType() {
			add(camel(e.GetName()), e.GetName())
		}
		for _, s := range fd.GetService() {
			add(camel(s.GetName())+"Client", s.GetName())
			add(camel(s.GetName())+"Server", s.GetName())
		}
		for _, n := range decls {
			d, ok := seen[n.goName]
			if !ok {
				seen[n.goName] = n
				continue
			}
			if d.full == n.full {
				continue
			}
			where := d.file
			if d.file != n.file {
				where += " and " + n.file
			}
			return fmt.Errorf("%s: %s and %s would both declare %s in Go, where kuberpc new generates every proto into one package, pb; rename one of them, or scaffold the protos as separate services",
				where, d.full, n.full, n.goName)
		}
	}
	return nil
}

// Validate checks the name, and for Go the module path, before anything
// is generated or built; New and its other languages' twins call it
// first, and a caller may call it earlier.
func (o Options) Validate() error {
	if err := validName(o.Name); err != nil {
		return err
	}
	if o.Module != "" {
		if err := module.CheckImportPath(o.Module); err != nil {
			return fmt.Errorf("--module %q: %w", o.Module, err)
		}
	}
	return nil
}

func validName(name string) error {
	if msgs := validation.IsDNS1035Label(name); len(msgs) > 0 {
		return fmt.Errorf("name %q: %s (lower-case letters, digits and '-', starting with a letter)", name, msgs[0])
	}
	return nil
}

func writeGoMod(dir string, o Options) error {
	version := o.KuberpcVersion
	if o.KuberpcSource != "" && version == "" {
		version = "v0.0.0" // replaced below
	}
	if version == "" {
		return errors.New("scaffold: the kuberpc library version to require is unknown")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "module %s\n\ngo 1.26\n\nrequire github.com/kuberpc/kuberpc %s\n\n", o.Module, version)
	b.WriteString("tool (\n\tgoogle.golang.org/grpc/cmd/protoc-gen-go-grpc\n\tgoogle.golang.org/protobuf/cmd/protoc-gen-go\n)\n")
	if o.KuberpcSource != "" {
		fmt.Fprintf(&b, "\nreplace github.com/kuberpc/kuberpc => %s\n", o.KuberpcSource)
	}
	return os.WriteFile(filepath.Join(dir, "go.mod"), []byte(b.String()), 0o644)
}

// goRef is how generated Go code names a message type.
type goRef struct{ Import, Ident string }

// wellKnown maps the well-known types' files to their Go packages.
var wellKnown = map[string]string{
	"google/protobuf/any.proto":            "anypb",
	"google/protobuf/api.proto":            "apipb",
	"google/protobuf/duration.proto":       "durationpb",
	"google/protobuf/empty.proto":          "emptypb",
	"google/protobuf/field_mask.proto":     "fieldmaskpb",
	"google/protobuf/source_context.proto": "sourcecontextpb",
	"google/protobuf/struct.proto":         "structpb",
	"google/protobuf/timestamp.proto":      "timestamppb",
	"google/protobuf/type.proto":           "typepb",
	"google/protobuf/wrappers.proto":       "wrapperspb",
}

// messageRefs maps every message of set (".pkg.Outer.Inner") to its Go
// name: package pb for the user's files, the protobuf module's package
// for the well-known types.
func messageRefs(set *descriptorpb.FileDescriptorSet, user []string) map[string]goRef {
	refs := map[string]goRef{}
	var walk func(prefix, goPrefix string, msgs []*descriptorpb.DescriptorProto, imp, pkg string)
	walk = func(prefix, goPrefix string, msgs []*descriptorpb.DescriptorProto, imp, pkg string) {
		for _, m := range msgs {
			full := prefix + "." + m.GetName()
			ident := goPrefix + camel(m.GetName())
			refs[full] = goRef{Import: imp, Ident: pkg + "." + ident}
			walk(full, ident+"_", m.GetNestedType(), imp, pkg)
		}
	}
	for _, fd := range set.GetFile() {
		prefix := ""
		if fd.GetPackage() != "" {
			prefix = "." + fd.GetPackage()
		}
		switch {
		case slices.Contains(user, fd.GetName()):
			walk(prefix, "", fd.GetMessageType(), "", "pb")
		case wellKnown[fd.GetName()] != "":
			pkg := wellKnown[fd.GetName()]
			walk(prefix, "", fd.GetMessageType(), "google.golang.org/protobuf/types/known/"+pkg, pkg)
		}
	}
	return refs
}

// services lists the services of the user's files in set with the Go
// names protoc-gen-go gives their messages.
func services(set *descriptorpb.FileDescriptorSet, user []string) ([]service, error) {
	refs := messageRefs(set, user)
	used := func(full string) (goRef, error) {
		r, ok := refs[full]
		if !ok {
			return goRef{}, fmt.Errorf("message %s: the scaffold supports messages of the given protos and the well-known types (google/protobuf/*.proto); pass the proto that declares it with another --proto", strings.TrimPrefix(full, "."))
		}
		return r, nil
	}
	var out []service
	for _, fd := range set.GetFile() {
		if !slices.Contains(user, fd.GetName()) {
			continue
		}
		pkg := fd.GetPackage()
		for _, s := range fd.GetService() {
			sv := service{
				Name: s.GetName(), GoName: camel(s.GetName()), Full: strings.TrimPrefix(pkg+"."+s.GetName(), "."),
				PyModule: strings.TrimSuffix(filepath.Base(fd.GetName()), ".proto"),
				File:     strings.TrimSuffix(fd.GetName(), ".proto"),
			}
			if pkg != "" {
				sv.CppNamespace = "::" + strings.ReplaceAll(pkg, ".", "::")
			}
			if jp := javaPackage(fd); jp != "" {
				sv.JavaGrpc = jp + "." + s.GetName() + "Grpc"
			}
			for _, m := range s.GetMethod() {
				in, err := used(m.GetInputType())
				if err != nil {
					return nil, err
				}
				outT, err := used(m.GetOutputType())
				if err != nil {
					return nil, err
				}
				mt := method{
					Name: camel(m.GetName()), In: in.Ident, Out: outT.Ident, InImport: in.Import, OutImport: outT.Import,
					ClientStream: m.GetClientStreaming(), ServerStream: m.GetServerStreaming(),
					Service: s.GetName(), GoService: sv.GoName, ServerType: sv.GoName + "_" + camel(m.GetName()) + "Server",
					ProtoName: m.GetName(), CppNamespace: sv.CppNamespace, JavaName: javaMethod(m.GetName()), JavaGrpc: sv.JavaGrpc,
				}
				for _, t := range []struct {
					full      string
					cpp, java *string
				}{{m.GetInputType(), &mt.CppIn, &mt.JavaIn}, {m.GetOutputType(), &mt.CppOut, &mt.JavaOut}} {
					if *t.cpp, err = cppType(set, t.full); err != nil {
						return nil, err
					}
					if *t.java, err = javaType(set, t.full); err != nil {
						return nil, err
					}
				}
				sv.Methods = append(sv.Methods, mt)
			}
			out = append(out, sv)
		}
	}
	return out, implNames(out)
}

// implNames sets each service's Impl: its own name, unless services of
// two proto packages share it.
func implNames(svcs []service) error {
	n := map[string]int{}
	for _, s := range svcs {
		n[s.GoName]++
	}
	byImpl := map[string]string{}
	for i := range svcs {
		s := &svcs[i]
		s.Impl = s.GoName
		if n[s.GoName] > 1 {
			s.Impl = camel(strings.ReplaceAll(s.Full, ".", "_"))
		}
		if other, ok := byImpl[s.Impl]; ok {
			return fmt.Errorf("services %s and %s would both be implemented by a class %s; rename one of them", other, s.Full, s.Impl)
		}
		byImpl[s.Impl] = s.Full
	}
	return nil
}

// goImports lists the packages of the well-known types the services use.
func goImports(svcs []service) []string {
	var out []string
	for _, s := range svcs {
		for _, m := range s.Methods {
			for _, imp := range []string{m.InImport, m.OutImport} {
				if imp != "" && !slices.Contains(out, imp) {
					out = append(out, imp)
				}
			}
		}
	}
	slices.Sort(out)
	return out
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
