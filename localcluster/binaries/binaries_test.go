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
