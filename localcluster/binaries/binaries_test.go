package binaries

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestProgressCountsWhatTheBuildCompiles: build's progress lines count
// against the packages the build compiles. With an empty build cache that
// is the standard library's packages too, which the count once left out
// ("498 of 367 packages" on a fresh machine); with a full cache it is
// none.
func TestProgressCountsWhatTheBuildCompiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOCACHE", t.TempDir())
	counts := regexp.MustCompile(`(?m)(\d+) packages to build|built hello: (\d+) packages`)
	for _, cache := range []string{"empty", "full"} {
		var progress bytes.Buffer
		if err := build(context.Background(), dir, filepath.Join(dir, "hello"), "", &progress); err != nil {
			t.Fatal(err)
		}
		m := counts.FindAllStringSubmatch(progress.String(), -1)
		if len(m) != 2 {
			t.Fatalf("%s cache: progress %q; want a count to build and a count built", cache, progress.String())
		}
		want, _ := strconv.Atoi(m[0][1])
		got, _ := strconv.Atoi(m[1][2])
		if got != want {
			t.Errorf("%s cache: %d packages to build, %d built:\n%s", cache, want, got, progress.String())
		}
		if cache == "empty" && want < 10 {
			t.Errorf("an empty cache: %d packages to build; want the runtime's packages too", want)
		}
		t.Logf("%s cache: %d packages to build, %d built", cache, want, got)
	}
}

// TestWrappersNameTheWorkspacesToolchain: the control plane and its
// add-ons are built with the toolchain go.work names for kuberpc's own
// modules (its standard library has the published advisories fixed),
// under the same rule: with GOTOOLCHAIN=auto, Go's default, the go
// command fetches it; with local, the installed Go builds both. Without
// the line, kuberpc cluster build under auto built them with the
// installed go1.26.8, while go run under go.work's toolchain (as
// scripts/test.sh runs it) built them with go1.26.10, into one cache.
func TestWrappersNameTheWorkspacesToolchain(t *testing.T) {
	toolchain := regexp.MustCompile(`(?m)^toolchain (\S+)$`)
	work, err := os.ReadFile("../../go.work")
	if err != nil {
		t.Fatal(err)
	}
	want := toolchain.FindSubmatch(work)
	if want == nil {
		t.Fatal("go.work names no toolchain")
	}
	for _, m := range append([]string{"controlplane", "etcd"}, addons...) {
		mod, err := wrapperFile(m, "go.mod")
		if err != nil {
			t.Fatal(err)
		}
		switch got := toolchain.FindSubmatch(mod); {
		case got == nil:
			t.Errorf("wrapper module %s names no toolchain; want go.work's, %s", m, want[1])
		case !bytes.Equal(got[1], want[1]):
			t.Errorf("wrapper module %s names toolchain %s; want go.work's, %s", m, got[1], want[1])
		}
	}
}
