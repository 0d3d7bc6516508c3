// Package install proves that kuberpc works for someone who has no
// checkout: it publishes the repository's modules at their release
// version to a file-system GOPROXY and, in a directory outside the
// checkout, builds a module that imports the library, installs the CLI
// with go install, and scaffolds and builds a service with it.
package install

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/zip"
)

// published are the modules a user fetches: the library, the metrics
// adapter and the local cluster (which the CLI needs), and the CLI. bench
// and e2e are not published.
var published = []struct{ path, dir string }{
	{"github.com/kuberpc/kuberpc", "."},
	{"github.com/kuberpc/kuberpc/metricsadapter", "metricsadapter"},
	{"github.com/kuberpc/kuberpc/localcluster", "localcluster"},
	{"github.com/kuberpc/kuberpc/cmd/kuberpc", "cmd/kuberpc"},
}

// heavy are modules the library must not bring into an importer's
// module graph.
var heavy = []string{
	"github.com/kuberpc/kuberpc/localcluster", "github.com/kuberpc/kuberpc/metricsadapter", "k8s.io/apiserver", "k8s.io/kubernetes",
	"github.com/virtual-kubelet/virtual-kubelet", "gonum.org/v1/plot", "github.com/spf13/cobra",
}

// notBuilt are modules that may appear in the graph through others'
// go.mod files (otel's and apimachinery's tests use go-internal) but
// must not be built into an importer's program.
var notBuilt = []string{"github.com/rogpeppe/go-internal", "golang.org/x/mod"}

func TestInstallFromPublishedModules(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// The modules require each other at the release version; they are
	// published at a version of their own for this run (as a release
	// would bump it), so that the shared module cache never holds two
	// contents for one version.
	release := releaseVersion(t, repo)
	version := fmt.Sprintf("%s-install.%d", release, time.Now().UnixNano())
	t.Logf("publishing %d modules at %s (the checkout's %s)", len(published), version, release)

	work := t.TempDir()
	proxy := filepath.Join(work, "proxy")
	hashes := map[string]string{}
	for _, m := range published {
		publish(t, repo, proxy, m.path, m.dir, release, version, hashes)
	}

	// Everything else comes from the module cache already on this machine
	// (a valid GOPROXY layout), then the network proxy. The run's own
	// versions are removed from the cache afterwards.
	gomodcache := goEnv(t, "GOMODCACHE")
	t.Cleanup(func() { forget(t, gomodcache, version) })
	env := append(os.Environ(),
		"GOWORK=off", "GOFLAGS=-modcacherw", "GONOSUMDB=github.com/kuberpc", "GONOSUMCHECK=1",
		"GOPROXY=file://"+proxy+",file://"+filepath.Join(gomodcache, "cache", "download")+","+goEnv(t, "GOPROXY"),
		"KUBERPC_SRC=", // no checkout
	)
	run := func(dir string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = dir, env
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
		}
		t.Logf("%s %s: %s", filepath.Base(name), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
		return string(out)
	}

	// 1. A module that imports server, client and resolver/kubernetes.
	consumer := filepath.Join(work, "consumer")
	os.MkdirAll(consumer, 0o755)
	write(t, filepath.Join(consumer, "go.mod"), "module example.com/consumer\n\ngo 1.26\n\nrequire github.com/kuberpc/kuberpc "+version+"\n")
	write(t, filepath.Join(consumer, "main.go"), consumerMain)
	run(consumer, "go", "mod", "tidy")
	run(consumer, "go", "build", "./...")
	mods := strings.Fields(run(consumer, "go", "list", "-m", "-f", "{{.Path}}", "all"))
	t.Logf("consumer: go list -m all lists %d modules; go.mod has %d lines", len(mods), lines(t, filepath.Join(consumer, "go.mod")))
	for _, h := range heavy {
		if slices.Contains(mods, h) {
			t.Errorf("a module importing the library has %s in its module graph", h)
		}
	}
	built := strings.Fields(run(consumer, "go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "./..."))
	for _, h := range append(heavy, notBuilt...) {
		if slices.Contains(built, h) {
			t.Errorf("a program importing the library builds packages of %s", h)
		}
	}
	gomod := read(t, filepath.Join(consumer, "go.mod"))
	if strings.Contains(gomod, "replace") {
		t.Errorf("consumer go.mod has a replace directive:\n%s", gomod)
	}

	// 2. go install the CLI.
	bin := filepath.Join(work, "bin")
	env = append(env, "GOBIN="+bin)
	run(work, "go", "install", "github.com/kuberpc/kuberpc/cmd/kuberpc@"+version)
	kuberpc := filepath.Join(bin, "kuberpc")
	if out := run(work, kuberpc, "version"); !strings.Contains(out, "kuberpc CLI "+version+", library "+version) {
		t.Errorf("kuberpc version printed %q; want the CLI and library at %s", out, version)
	}

	// 3. kuberpc new builds a service that requires the release, no replace.
	apps := filepath.Join(work, "apps")
	os.MkdirAll(apps, 0o755)
	run(apps, kuberpc, "new", "greeter")
	svc := filepath.Join(apps, "greeter")
	gomod = read(t, filepath.Join(svc, "go.mod"))
	mf, err := modfile.Parse("go.mod", []byte(gomod), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(mf.Replace) > 0 {
		t.Errorf("kuberpc new wrote replace directives:\n%s", gomod)
	}
	if !slices.ContainsFunc(mf.Require, func(r *modfile.Require) bool {
		return r.Mod.Path == "github.com/kuberpc/kuberpc" && r.Mod.Version == version
	}) {
		t.Errorf("kuberpc new's go.mod does not require github.com/kuberpc/kuberpc %s:\n%s", version, gomod)
	}
	run(svc, "go", "build", "./...")
	run(svc, kuberpc, "gen")

	// 4. The control plane's sources are in the binary: no checkout is
	// needed to find (or build) the binaries.
	if out := run(work, kuberpc, "cluster", "build"); !strings.Contains(out, "control-plane binaries ready") {
		t.Errorf("kuberpc cluster build printed %q", out)
	}
}

const consumerMain = `package main

import (
	"context"
	"log"

	"github.com/kuberpc/kuberpc/client"
	_ "github.com/kuberpc/kuberpc/resolver/kubernetes"
	"github.com/kuberpc/kuberpc/server"
)

func main() {
	srv, err := server.New()
	if err != nil {
		log.Fatal(err)
	}
	cc, err := client.Dial("kubernetes:///example.default:grpc")
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	log.Fatal(srv.Run(context.Background()))
}
`

// releaseVersion is the version at which the nested modules require the
// library and each other; they must all agree.
func releaseVersion(t *testing.T, repo string) string {
	t.Helper()
	version := ""
	for _, dir := range []string{"metricsadapter", "localcluster", "cmd/kuberpc", "bench", "e2e"} {
		f, err := modfile.Parse("go.mod", []byte(read(t, filepath.Join(repo, dir, "go.mod"))), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Replace) > 0 {
			t.Errorf("%s/go.mod has replace directives; the checkout uses go.work", dir)
		}
		for _, r := range f.Require {
			if !strings.HasPrefix(r.Mod.Path, "github.com/kuberpc/kuberpc") {
				continue
			}
			if version == "" {
				version = r.Mod.Version
			}
			if r.Mod.Version != version {
				t.Fatalf("%s/go.mod requires %s %s, others %s: every module must require the same release", dir, r.Mod.Path, r.Mod.Version, version)
			}
		}
	}
	if version == "" {
		t.Fatal("no module requires the library")
	}
	return version
}

// publish writes module path (the directory dir of repo) at version into
// the file-system proxy, from the files git tracks (or would track). The
// CLI's go.sum gains the hashes of the modules published before it, as a
// release does after tagging the library.
func publish(t *testing.T, repo, proxy, path, dir, release, version string, hashes map[string]string) {
	t.Helper()
	m := module.Version{Path: path, Version: version}
	esc, err := module.EscapePath(path)
	if err != nil {
		t.Fatal(err)
	}
	vdir := filepath.Join(proxy, esc, "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	gomod := regexp.MustCompile(`(github\.com/kuberpc/kuberpc\S*) `+regexp.QuoteMeta(release)+`\b`).
		ReplaceAllString(read(t, filepath.Join(repo, dir, "go.mod")), "${1} "+version)
	gosum := ""
	if b, err := os.ReadFile(filepath.Join(repo, dir, "go.sum")); err == nil {
		gosum = string(b)
	}
	for _, dep := range published {
		if h, ok := hashes[dep.path]; ok && strings.Contains(gomod, dep.path+" ") {
			gosum += h
		}
	}
	files := moduleFiles(t, repo, dir, map[string]string{"go.sum": gosum, "go.mod": gomod})
	zipPath := filepath.Join(vdir, version+".zip")
	zf, err := os.Create(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := zip.Create(zf, m, files); err != nil {
		t.Fatalf("zip %s: %v", path, err)
	}
	zf.Close()
	write(t, filepath.Join(vdir, version+".mod"), gomod)
	info, _ := json.Marshal(map[string]any{"Version": version, "Time": time.Now().UTC().Format(time.RFC3339)})
	write(t, filepath.Join(vdir, version+".info"), string(info))
	write(t, filepath.Join(vdir, "list"), version+"\n")

	h1, err := dirhash.HashZip(zipPath, dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	hmod, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(gomod)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	hashes[path] = fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n", path, version, h1, path, version, hmod)
	st, _ := os.Stat(zipPath)
	t.Logf("published %s@%s: %d files, %d KiB zip", path, version, len(files), st.Size()>>10)
}

// moduleFiles lists the files of the module in repo/dir that git tracks
// or would track (not ignored), leaving out nested modules; override
// replaces some files' content.
func moduleFiles(t *testing.T, repo, dir string, override map[string]string) []zip.File {
	t.Helper()
	out, err := exec.Command("git", "-C", filepath.Join(repo, dir), "ls-files", "--cached", "--others", "--exclude-standard", "--full-name", ".").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	prefix := ""
	if dir != "." {
		prefix = dir + "/"
	}
	var nested []string
	var rels []string
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		rel := strings.TrimPrefix(f, prefix)
		if _, err := os.Lstat(filepath.Join(repo, f)); err != nil {
			continue // deleted in the working tree
		}
		if filepath.Base(rel) == "go.mod" && rel != "go.mod" {
			nested = append(nested, filepath.Dir(rel)+"/")
		}
		rels = append(rels, rel)
	}
	var files []zip.File
	for _, rel := range rels {
		if slices.ContainsFunc(nested, func(n string) bool { return strings.HasPrefix(rel, n) }) {
			continue
		}
		if rel == "go.work" || rel == "go.work.sum" {
			continue
		}
		files = append(files, file{rel: rel, path: filepath.Join(repo, prefix+rel), content: override[rel], override: override[rel] != ""})
	}
	if _, ok := override["go.sum"]; ok && override["go.sum"] != "" && !slices.Contains(rels, "go.sum") {
		files = append(files, file{rel: "go.sum", content: override["go.sum"], override: true})
	}
	return files
}

// file is a zip.File read from disk, or given content.
type file struct {
	rel, path, content string
	override           bool
}

func (f file) Path() string { return f.rel }

func (f file) Lstat() (fs.FileInfo, error) {
	if f.override {
		return fakeInfo{name: filepath.Base(f.rel), size: int64(len(f.content))}, nil
	}
	return os.Lstat(f.path)
}

func (f file) Open() (io.ReadCloser, error) {
	if f.override {
		return io.NopCloser(strings.NewReader(f.content)), nil
	}
	return os.Open(f.path)
}

type fakeInfo struct {
	name string
	size int64
}

func (i fakeInfo) Name() string       { return i.name }
func (i fakeInfo) Size() int64        { return i.size }
func (i fakeInfo) Mode() fs.FileMode  { return 0o644 }
func (i fakeInfo) ModTime() time.Time { return time.Time{} }
func (i fakeInfo) IsDir() bool        { return false }
func (i fakeInfo) Sys() any           { return nil }

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func lines(t *testing.T, path string) int {
	return strings.Count(read(t, path), "\n")
}

// forget removes version's modules from the module cache.
func forget(t *testing.T, gomodcache, version string) {
	for _, dir := range []string{filepath.Join(gomodcache, "github.com", "kuberpc"), filepath.Join(gomodcache, "cache", "download", "github.com", "kuberpc")} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if strings.Contains(d.Name(), version) {
				if err := os.RemoveAll(p); err != nil {
					t.Logf("clean the module cache: %v", err)
				}
				if d.IsDir() {
					return fs.SkipDir
				}
			}
			return nil
		})
	}
}
