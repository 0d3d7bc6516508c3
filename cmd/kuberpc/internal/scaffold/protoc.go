// Package scaffold creates a kuberpc service module from a .proto (`kuberpc
// new`) and regenerates its code (`kuberpc gen`), with protoc and the
// protoc-gen-go and protoc-gen-go-grpc plugins pinned in go.mod.
package scaffold

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// ErrProtoc is wrapped by errors protoc reports about the .proto files;
// the message quotes protoc, which names file:line:column.
var ErrProtoc = errors.New("protoc rejected the proto")

// protoc runs protoc with args in dir.
func protoc(ctx context.Context, dir string, args ...string) error {
	path, err := exec.LookPath("protoc")
	if err != nil {
		return errors.New("protoc not found: install protobuf-compiler (scripts/setup.sh does)")
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("%w:\n%s", ErrProtoc, msg)
	}
	return nil
}

// DescriptorSet compiles the .proto files with protoc, finding them and
// their imports in importPaths (default: the working directory), and
// returns their FileDescriptorSet with everything they import.
func DescriptorSet(ctx context.Context, files, importPaths []string) ([]byte, error) {
	if len(importPaths) == 0 {
		importPaths = []string{"."}
	}
	return descriptorSet(ctx, ".", files, importPaths)
}

// descriptorSet runs protoc in dir on files, with importPaths (relative to
// dir), and returns the serialised FileDescriptorSet.
func descriptorSet(ctx context.Context, dir string, files, importPaths []string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "kuberpc-desc")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var args []string
	for _, p := range importPaths {
		args = append(args, "-I", p)
	}
	out := filepath.Join(tmp, "set.pb")
	args = append(args, "--include_imports", "--descriptor_set_out="+out)
	if err := protoc(ctx, dir, append(args, files...)...); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// describe parses the .proto files (relative to protoDir) and returns
// their descriptors with those of everything they import.
func describe(ctx context.Context, protoDir string, files []string) (*descriptorpb.FileDescriptorSet, error) {
	b, err := descriptorSet(ctx, protoDir, files, []string{"."})
	if err != nil {
		return nil, err
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	return &set, nil
}

// buildPlugins builds protoc-gen-go and protoc-gen-go-grpc at the
// versions pinned by the module in modDir into binDir.
func buildPlugins(ctx context.Context, modDir, binDir string) error {
	for _, p := range []string{"google.golang.org/protobuf/cmd/protoc-gen-go", "google.golang.org/grpc/cmd/protoc-gen-go-grpc"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(binDir, filepath.Base(p)), p)
		cmd.Dir = modDir
		// A new module has no go.sum yet: let go resolve the plugins'
		// modules from the versions the kuberpc library requires.
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", filepath.Base(p), err, out)
		}
	}
	return nil
}

// GenGo generates Go code for every .proto in modDir/proto into
// modDir/pb, as package pb of module modPath, with the plugins at the
// versions modDir's module graph pins.
func GenGo(ctx context.Context, modDir, modPath string) error {
	files, err := filepath.Glob(filepath.Join(modDir, "proto", "*.proto"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no .proto files in %s", filepath.Join(modDir, "proto"))
	}
	var rel []string
	for _, f := range files {
		rel = append(rel, filepath.Base(f))
	}
	set, err := describe(ctx, filepath.Join(modDir, "proto"), rel)
	if err != nil {
		return err
	}
	if err := goNameClash(set, rel); err != nil {
		return err
	}
	bin, err := os.MkdirTemp("", "kuberpc-plugins")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	if err := buildPlugins(ctx, modDir, bin); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(modDir, "pb"), 0o755); err != nil {
		return err
	}
	var m []string
	for _, r := range rel {
		m = append(m, "M"+r+"="+modPath+"/pb;pb")
	}
	opt := "paths=source_relative," + strings.Join(m, ",")
	args := []string{"-I", ".",
		"--plugin=protoc-gen-go=" + filepath.Join(bin, "protoc-gen-go"),
		"--plugin=protoc-gen-go-grpc=" + filepath.Join(bin, "protoc-gen-go-grpc"),
		"--go_out=../pb", "--go_opt=" + opt, "--go-grpc_out=../pb", "--go-grpc_opt=" + opt}
	return protoc(ctx, filepath.Join(modDir, "proto"), append(args, rel...)...)
}

// GenPython generates Python stubs for modDir/proto/*.proto into
// modDir/python with Debian's grpc_tools.
func GenPython(ctx context.Context, modDir string) error {
	files, err := filepath.Glob(filepath.Join(modDir, "proto", "*.proto"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no .proto files in %s", filepath.Join(modDir, "proto"))
	}
	if err := os.MkdirAll(filepath.Join(modDir, "python"), 0o755); err != nil {
		return err
	}
	args := []string{"-m", "grpc_tools.protoc", "-I", ".", "--python_out=../python", "--grpc_python_out=../python"}
	for _, f := range files {
		args = append(args, filepath.Base(f))
	}
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", args...)
	cmd.Dir = filepath.Join(modDir, "proto")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w:\n%s", ErrProtoc, strings.TrimSpace(string(out)))
	}
	return nil
}
