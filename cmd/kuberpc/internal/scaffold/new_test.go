package scaffold_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/scaffold"
	"github.com/kuberpc/kuberpc/examples/example"
)

// checkout is the kuberpc checkout this test runs in, which the Go
// services it scaffolds build against.
func checkout(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "server", "server.go")); err != nil {
		t.Fatalf("not in a kuberpc checkout: %v", err)
	}
	return dir
}

// TestScaffoldedGoBuilds: `kuberpc new` in Go builds (and vets) its
// server and client for shopProtos, and for a proto whose first unary
// method, the one the client calls, takes a well-known type, and whose
// names are those of the scaffold's own code (a message Server, a
// service Client, methods Run, New, Close, Context) in a package that is
// a Go keyword.
func TestScaffoldedGoBuilds(t *testing.T) {
	src := checkout(t)
	for name, protos := range map[string][]scaffold.File{
		"shop": shopProtos,
		"keywords": {{Name: "keywords.proto", Content: []byte(`syntax = "proto3";
package type.v1;
import "google/protobuf/empty.proto";
import "google/protobuf/timestamp.proto";
message Server { string name = 1; google.protobuf.Timestamp at = 2; }
message Health { int32 x = 1; }
service Main {
  rpc Run (google.protobuf.Empty) returns (Server);
  rpc New (stream Health) returns (google.protobuf.Empty);
  rpc Close (stream Server) returns (stream Server);
  rpc Context (Health) returns (stream Health);
}
service Client { rpc Dial (Health) returns (Health); }
`)}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path, err := scaffold.New(context.Background(), scaffold.Options{Name: name, Dir: t.TempDir(), Protos: protos, KuberpcSource: src})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"cmd/server/main.go", "cmd/client/main.go", "kuberpc.yaml"} {
				if _, err := os.Stat(filepath.Join(path, f)); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestGoNameClashIsNamed: two protos of different packages that declare
// the same name, which Go's one package pb cannot hold, are refused
// before any code is generated, naming both declarations; nothing is
// left behind. Other languages keep the packages apart and are not
// refused.
func TestGoNameClashIsNamed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		protos []scaffold.File
		want   []string
	}{{
		name: "message",
		protos: []scaffold.File{
			{Name: "a.proto", Content: []byte("syntax = \"proto3\";\npackage acme.a;\nmessage Item { string x = 1; }\nservice A { rpc Get (Item) returns (Item); }\n")},
			{Name: "b.proto", Content: []byte("syntax = \"proto3\";\npackage acme.b;\nmessage Item { string y = 1; }\nservice B { rpc Get (Item) returns (Item); }\n")},
		},
		want: []string{"a.proto and b.proto", "acme.a.Item and acme.b.Item", "declare Item in Go"},
	}, {
		name: "service",
		protos: []scaffold.File{
			{Name: "a.proto", Content: []byte("syntax = \"proto3\";\npackage acme.a;\nmessage Req {}\nservice Svc { rpc Get (Req) returns (Req); }\n")},
			{Name: "b.proto", Content: []byte("syntax = \"proto3\";\npackage acme.b;\nmessage Other {}\nservice Svc { rpc Get (Other) returns (Other); }\n")},
		},
		want: []string{"acme.a.Svc and acme.b.Svc", "declare SvcClient in Go"},
	}, {
		name: "message named like a service's client",
		protos: []scaffold.File{
			{Name: "a.proto", Content: []byte("syntax = \"proto3\";\npackage acme;\nmessage SvcClient {}\nservice Svc { rpc Get (SvcClient) returns (SvcClient); }\n")},
		},
		want: []string{"a.proto: acme.SvcClient and acme.Svc", "declare SvcClient in Go"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := scaffold.New(context.Background(), scaffold.Options{Name: "clash", Dir: dir, Protos: tc.protos, KuberpcSource: checkout(t)})
			if err == nil {
				t.Fatal("scaffolded; want the clash named")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("left behind in %s: %v", dir, entries)
			}
		})
	}
}

// TestKeywordsTheGeneratorsCopyAreNamed: a proto name that a language's
// generator copies into code as it is, and that is a keyword there, is
// refused before anything is generated, naming it and what to change;
// before, the scaffold failed with the compiler's complaint about the
// generated files. Nothing is left behind.
func TestKeywordsTheGeneratorsCopyAreNamed(t *testing.T) {
	for _, tc := range []struct {
		lang, proto string
		want        []string
	}{
		{"cpp", "syntax = \"proto3\";\npackage acme;\nmessage M {}\nservice S { rpc delete (M) returns (M); }\n",
			[]string{"method S.delete", `"delete" is a C++ keyword`, "rename the method"}},
		{"cpp", "syntax = \"proto3\";\npackage acme;\nmessage union { int32 x = 1; }\nservice S { rpc Get (union) returns (union); }\n",
			[]string{"message union", `"union" is a C++ keyword`, "rename the message"}},
		{"cpp", "syntax = \"proto3\";\npackage default.v1;\nmessage M {}\nservice S { rpc Get (M) returns (M); }\n",
			[]string{"package default.v1", `"default" is a C++ keyword`, "rename the package"}},
		{"java", "syntax = \"proto3\";\npackage acme.int;\nmessage M {}\nservice S { rpc Get (M) returns (M); }\n",
			[]string{"package acme.int", `"int" is a Java keyword`, "java_package"}},
		{"python", "syntax = \"proto3\";\npackage acme;\nmessage M {}\nservice S { rpc import (M) returns (M); }\n",
			[]string{"method S.import", `"import" is a Python keyword`, "rename the method"}},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			if err := example.RequireToolchain(tc.lang); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			o := scaffold.Options{Name: "kw", Dir: dir, Protos: []scaffold.File{{Name: "kw.proto", Content: []byte(tc.proto)}}}
			var err error
			switch tc.lang {
			case "cpp":
				_, err = scaffold.NewCpp(context.Background(), o, scaffold.CppRuntime())
			case "java":
				_, err = scaffold.NewJava(context.Background(), o, scaffold.JavaRuntime())
			case "python":
				_, err = scaffold.NewPython(context.Background(), o, scaffold.PythonRuntime())
			}
			if err == nil {
				t.Fatal("scaffolded; want the keyword named")
			}
			for _, w := range append(tc.want, "kw.proto") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("left behind in %s: %v", dir, entries)
			}
		})
	}
	// With java_package set, the Java package is that one; a method named
	// like a Java keyword is one grpc-java's generator escapes (default_),
	// and the scaffold's server must override that name.
	o := scaffold.Options{Name: "kw", Dir: t.TempDir(), Protos: []scaffold.File{{Name: "kw.proto", Content: []byte(
		"syntax = \"proto3\";\npackage acme.int;\noption java_package = \"com.acme.ints\";\nmessage M {}\nservice S { rpc Get (M) returns (M); rpc Default (M) returns (M); }\n")}}}
	if _, err := scaffold.NewJava(context.Background(), o, scaffold.JavaRuntime()); err != nil {
		t.Errorf("java_package set, a method Default: %v", err)
	}
}
