// Package binaries builds and caches the local cluster's control-plane
// binaries from their wrapper modules (modules/controlplane, one
// multi-call binary for kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy and kubectl; modules/etcd;
// modules/coredns, the cluster DNS; and modules/metrics-server, the
// resource metrics API), which are embedded in this package so that no
// source checkout is needed. The cache is keyed by the Kubernetes version
// and a hash of the wrapper modules (the add-ons, CoreDNS and
// metrics-server, each by its own module's hash, so adding or changing one
// does not rebuild the rest), so a second start finds them at once.
package binaries

import (
	"bufio"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// KubernetesVersion is the version the wrapper module pins.
const KubernetesVersion = "v1.37.2"

// Components are the names the multi-call kube binary answers to.
var Components = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl"}

// Set is a directory of ready binaries: Path("etcd"), Path("kubectl"), ...
type Set struct{ Dir string }

// Path returns the path of the named binary.
func (s Set) Path(name string) string { return filepath.Join(s.Dir, name) }

// modules holds the wrapper modules' go.mod, go.sum and main.go, stored
// with a .txt suffix so that they are files of this module rather than
// nested modules: a kuberpc binary installed with go install carries them
// and needs no checkout to build the control plane.
//
//go:embed modules
var modules embed.FS

// wrapperFiles are the files of each wrapper module, in cache-key order.
var wrapperFiles = []string{"go.mod", "go.sum", "main.go"}

// Ensure returns the cached binaries, building any that are missing into
// cacheDir from the embedded wrapper modules and reporting progress on
// progress.
func Ensure(ctx context.Context, cacheDir string, progress io.Writer) (Set, error) {
	key, err := cacheKey()
	if err != nil {
		return Set{}, err
	}
	set := Set{Dir: filepath.Join(cacheDir, KubernetesVersion+"-"+key)}
	if err := os.MkdirAll(set.Dir, 0o755); err != nil {
		return set, err
	}
	addonKeys := map[string]string{}
	for _, m := range addons {
		if addonKeys[m], err = moduleKey(m); err != nil {
			return Set{}, err
		}
	}
	builds := []struct {
		name, module, ldflags, hint string
	}{
		{"etcd", "etcd", "-s -w", "about 1.5 min the first time on 2 cores"},
		{"coredns-" + addonKeys["coredns"], "coredns", "-s -w", "about 2.5 min the first time"},
		{"metrics-server-" + addonKeys["metrics-server"], "metrics-server", "-s -w", "about 5 min the first time"},
		{"kube", "controlplane", "-s -w" +
			" -X k8s.io/component-base/version.gitVersion=" + KubernetesVersion +
			" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37" +
			" -X k8s.io/component-base/version.gitTreeState=clean",
			"about 13 min the first time"},
	}
	for _, b := range builds {
		out := set.Path(b.name)
		if _, err := os.Stat(out); err == nil {
			continue
		}
		src := filepath.Join(set.Dir, "src", b.module)
		if err := extract(b.module, src); err != nil {
			return set, fmt.Errorf("build %s: %w", b.name, err)
		}
		fmt.Fprintf(progress, "building %s (Kubernetes %s) from its Go module (%s)\n", b.name, KubernetesVersion, b.hint)
		if err := build(ctx, src, out, b.ldflags, progress); err != nil {
			return set, fmt.Errorf("build %s: %w", b.name, err)
		}
	}
	// An add-on's name names the build of its current module.
	for _, m := range addons {
		link, target := set.Path(m), m+"-"+addonKeys[m]
		if cur, err := os.Readlink(link); err != nil || cur != target {
			os.Remove(link)
			if err := os.Symlink(target, link); err != nil {
				return set, err
			}
		}
	}
	for _, c := range Components {
		link := set.Path(c)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink("kube", link); err != nil {
			return set, err
		}
	}
	return set, nil
}

// wrapperFile returns the embedded file f of the wrapper module.
func wrapperFile(module, f string) ([]byte, error) {
	return modules.ReadFile("modules/" + module + "/" + f + ".txt")
}

// goCommand is a go command run in the wrapper module dir: outside any
// workspace, resolving modules itself.
func goCommand(ctx context.Context, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	return cmd
}

// extract writes the embedded wrapper module into dir.
func extract(module, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range wrapperFiles {
		b, err := wrapperFile(module, f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// addons are the wrapper modules cached by their own hash.
var addons = []string{"coredns", "metrics-server"}

// cacheKey hashes the control-plane and etcd wrapper modules' go.mod,
// go.sum and main.go.
func cacheKey() (string, error) { return moduleKey("controlplane", "etcd") }

// moduleKey hashes the named wrapper modules' files.
func moduleKey(mods ...string) (string, error) {
	h := sha256.New()
	for _, mod := range mods {
		for _, f := range wrapperFiles {
			b, err := wrapperFile(mod, f)
			if err != nil {
				return "", fmt.Errorf("cache key: %w", err)
			}
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// buildFlags are the flags build compiles with; prepare asks go list
// with them too, so that it counts what this build will compile.
var buildFlags = []string{"-trimpath"}

// prepare downloads the module's dependencies quietly and counts the
// packages the build will compile, for the progress lines: those not in
// the build cache (stale, for build's flags), the standard library's
// included, since a fresh cache compiles those too.
func prepare(ctx context.Context, dir string, progress io.Writer) (int, error) {
	start := time.Now()
	if out, err := goCommand(ctx, dir, "mod", "download").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go mod download: %w\n%s", err, out)
	}
	args := append([]string{"list", "-deps"}, buildFlags...)
	// A main package whose compiled form is cached is stale only for
	// want of an installed binary, and is not compiled again.
	format := `{{if and .Stale (ne .StaleReason "not installed but available in build cache")}}{{.ImportPath}}{{end}}`
	out, err := goCommand(ctx, dir, append(args, "-f", format, ".")...).Output()
	if err != nil {
		return 0, fmt.Errorf("go list: %w", err)
	}
	mout, _ := goCommand(ctx, dir, "list", "-m", "-f", "{{.Path}}", "all").Output()
	n := len(strings.Fields(string(out)))
	fmt.Fprintf(progress, "  %d modules ready, %d packages to build (%s)\n", len(strings.Fields(string(mout))), n, time.Since(start).Round(time.Second))
	return n, nil
}

// build runs go build -v in dir, printing a progress line every 10s with
// the number of packages compiled so far of the total, and an estimate of
// the time left.
func build(ctx context.Context, dir, out, ldflags string, progress io.Writer) error {
	total, err := prepare(ctx, dir, progress)
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	args := append([]string{"build", "-v"}, buildFlags...)
	cmd := goCommand(ctx, dir, append(args, "-ldflags", ldflags, "-o", tmp, ".")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	var pkgs atomic.Int64
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, " ") || strings.HasPrefix(line, "#") {
				tail = append(tail, line) // a compiler message, not a package path
				if len(tail) > 40 {
					tail = tail[1:]
				}
				continue
			}
			pkgs.Add(1)
		}
	}()
	start := time.Now()
	ticker := time.NewTicker(10 * time.Second)
	defer ticker.Stop()
	waitErr := make(chan error, 1)
	go func() { <-done; waitErr <- cmd.Wait() }()
	for {
		select {
		case err := <-waitErr:
			if err != nil {
				os.Remove(tmp)
				return fmt.Errorf("%w\n%s", err, strings.Join(tail, "\n"))
			}
			fmt.Fprintf(progress, "  built %s: %d packages in %s\n", filepath.Base(out), pkgs.Load(), time.Since(start).Round(time.Second))
			return os.Rename(tmp, out)
		case <-ticker.C:
			n, el := pkgs.Load(), time.Since(start)
			line := fmt.Sprintf("  ... %d of %d packages, %s", n, total, el.Round(time.Second))
			if n > 0 && int(n) < total {
				left := time.Duration(float64(el) * float64(int64(total)-n) / float64(n))
				line += fmt.Sprintf(", about %s left", left.Round(10*time.Second))
			}
			fmt.Fprintln(progress, line)
		case <-ctx.Done():
			<-waitErr
			os.Remove(tmp)
			return errors.Join(ctx.Err(), errors.New("build cancelled"))
		}
	}
}
