package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// goFiles lists the repository's Go files (repoFiles), relative to its
// root, which it also returns; test files, generated code and files
// deleted in the working tree are left out.
func goFiles(t *testing.T) (string, []string) {
	t.Helper()
	dir, all := repoFiles(t, "*.go")
	var files []string
	for _, f := range all {
		if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, ".pb.go") || strings.Contains(f, "/testdata/") {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			continue // deleted in the working tree
		}
		files = append(files, f)
	}
	return dir, files
}

// TestExportedNamesAreDocumented fails when an exported type, function,
// method, constant or variable in a non-main package has no doc comment
// (a group's comment covers its members), or a package has no package
// comment in any of its files.
func TestExportedNamesAreDocumented(t *testing.T) {
	root, files := goFiles(t)
	fset := token.NewFileSet()
	pkgDoc := map[string]bool{}
	for _, f := range files {
		file, err := parser.ParseFile(fset, filepath.Join(root, f), nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if file.Name.Name == "main" {
			continue
		}
		dir := filepath.Dir(f)
		pkgDoc[dir] = pkgDoc[dir] || file.Doc != nil
		for _, d := range file.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() && d.Doc == nil && exportedReceiver(d) {
					t.Errorf("%s: %s has no doc comment", fset.Position(d.Pos()), funcName(d))
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() && d.Doc == nil && s.Doc == nil {
							t.Errorf("%s: type %s has no doc comment", fset.Position(s.Pos()), s.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() && d.Doc == nil && s.Doc == nil && s.Comment == nil {
								t.Errorf("%s: %s has no doc comment", fset.Position(n.Pos()), n)
							}
						}
					}
				}
			}
		}
	}
	for dir, ok := range pkgDoc {
		if !ok {
			t.Errorf("%s: no package comment in any file", dir)
		}
	}
}

// exportedReceiver reports whether f is a function, or a method of an
// exported type (an exported method of an unexported type is reached only
// through an interface, which is documented where it is declared).
func exportedReceiver(f *ast.FuncDecl) bool {
	if f.Recv == nil || len(f.Recv.List) == 0 {
		return true
	}
	typ := f.Recv.List[0].Type
	for {
		switch e := typ.(type) {
		case *ast.StarExpr:
			typ = e.X
		case *ast.IndexExpr:
			typ = e.X
		case *ast.IndexListExpr:
			typ = e.X
		case *ast.Ident:
			return e.IsExported()
		default:
			return true
		}
	}
}

func funcName(f *ast.FuncDecl) string {
	if f.Recv == nil || len(f.Recv.List) == 0 {
		return f.Name.Name
	}
	return "method " + f.Name.Name
}

// examplesExempt are public packages with no example_test.go, and why.
var examplesExempt = map[string]string{
	"examples/example": "the reference service's generated code and its Greeter, shown by every other package's examples",
}

// TestPublicPackagesHaveExamples fails when a package of the library
// module that users can import (not internal, not a command) has no
// example_test.go.
func TestPublicPackagesHaveExamples(t *testing.T) {
	root, files := goFiles(t)
	fset := token.NewFileSet()
	pkgs := map[string]bool{}
	for _, f := range files {
		dir := filepath.Dir(f)
		if slices.Contains(strings.Split(dir, "/"), "internal") || inNestedModule(root, dir) {
			continue
		}
		file, err := parser.ParseFile(fset, filepath.Join(root, f), nil, parser.PackageClauseOnly)
		if err != nil {
			t.Fatal(err)
		}
		if file.Name.Name != "main" {
			pkgs[dir] = true
		}
	}
	if len(pkgs) < 10 {
		t.Fatalf("found %d public packages; the walk is wrong", len(pkgs))
	}
	for dir := range pkgs {
		if _, ok := examplesExempt[dir]; ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, dir, "example_test.go")); err != nil {
			t.Errorf("%s: public package without example_test.go", dir)
		}
	}
}

// inNestedModule reports whether dir (relative to root) lies in a module
// other than the root's.
func inNestedModule(root, dir string) bool {
	for d := dir; d != "." && d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(root, d, "go.mod")); err == nil {
			return true
		}
	}
	return false
}
