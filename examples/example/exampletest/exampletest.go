// Package exampletest builds and runs the reference example's servers and
// clients in every language kuberpc serves (Go aside): Python (run from
// its sources with Debian's /usr/bin/python3), C++ (built with its
// Makefile against Debian's gRPC) and Java (built with its build.sh
// against Debian's jars). Builds are cached by the hash of their sources,
// so a test run builds each language once.
//
// It is for tests, the local cluster's images and benchmarks; the
// toolchains come from scripts/setup.sh.
package exampletest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kuberpc/kuberpc/examples/example"
)

// Languages are the languages Build knows.
var Languages = []string{"python", "cpp", "java"}

// Programs are the commands that run a language's example server and
// client (the client takes HOST:PORT NAME...).
type Programs struct {
	Server []string
	Client []string
}

// Dir is the directory of the example (examples/example), found from this
// file's location in the checkout.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

var (
	mu    sync.Mutex
	built = map[string]Programs{}
)

// Build returns the programs of lang, building them first if the cache
// has no build of the current sources.
func Build(ctx context.Context, lang string) (Programs, error) {
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[lang]; ok {
		return p, nil
	}
	dir := Dir()
	var p Programs
	var err error
	switch lang {
	case "python":
		if err := example.RequireToolchain(lang); err != nil {
			return p, err
		}
		py := "/usr/bin/python3"
		p = Programs{Server: []string{py, filepath.Join(dir, "python", "server.py")}, Client: []string{py, filepath.Join(dir, "python", "client.py")}}
	case "cpp":
		p, err = cached(ctx, lang, dir, []string{"cpp", ".", "python/proto"}, func(out string) error {
			return run(ctx, lang, filepath.Join(dir, "cpp"), "make", "-j", fmt.Sprint(runtime.NumCPU()),
				"OUT="+out, "PROTO_DIR="+dir, "HEALTH_PROTO_DIR="+filepath.Join(dir, "python", "proto"))
		})
	case "java":
		p, err = cached(ctx, lang, dir, []string{"java", ".", "python/proto"}, func(out string) error {
			return run(ctx, lang, dir, "bash", filepath.Join(dir, "java", "build.sh"), out, dir, filepath.Join(dir, "python", "proto"))
		})
	default:
		return p, fmt.Errorf("no example in language %q; want one of %s", lang, strings.Join(Languages, ", "))
	}
	if err != nil {
		return p, err
	}
	built[lang] = p
	return p, nil
}

// cached builds into the cache directory named by the hash of the
// sources in srcs (directories under dir; "." is dir's own files, not its
// subdirectories), unless it holds a complete build already.
func cached(ctx context.Context, lang, dir string, srcs []string, build func(out string) error) (Programs, error) {
	sum, err := hashSources(dir, srcs)
	if err != nil {
		return Programs{}, err
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	out := filepath.Join(base, "kuberpc", "examples", lang+"-"+sum[:16])
	p := Programs{Server: []string{filepath.Join(out, "server")}, Client: []string{filepath.Join(out, "client")}}
	if _, err := os.Stat(filepath.Join(out, ".complete")); err == nil {
		now := time.Now()
		os.Chtimes(filepath.Join(out, ".complete"), now, now) // used: see below
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return p, err
	}
	// Build beside, then rename: a build cut short is never taken for a
	// complete one, and two test processes building at once both end
	// with one complete directory.
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".build-"+lang+"-")
	if err != nil {
		return p, err
	}
	defer os.RemoveAll(tmp)
	if err := build(tmp); err != nil {
		return p, fmt.Errorf("build the %s example: %w", lang, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return p, err
	}
	if err := os.Rename(tmp, out); err != nil {
		if _, statErr := os.Stat(filepath.Join(out, ".complete")); statErr == nil {
			return p, nil // another process finished first
		}
		return p, err
	}
	// Builds of other sources unused for a day go (another checkout on
	// this machine may be using a recent one).
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(out), lang+"-*"))
	for _, o := range old {
		if fi, err := os.Stat(filepath.Join(o, ".complete")); o != out && err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
			os.RemoveAll(o)
		}
	}
	return p, nil
}

func hashSources(dir string, srcs []string) (string, error) {
	h := sha256.New()
	for _, s := range srcs {
		root := filepath.Join(dir, s)
		var files []string
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if path != root && (s == "." || d.Name() == "build" || strings.HasPrefix(d.Name(), ".")) {
					return filepath.SkipDir
				}
				return nil
			}
			if s == "." && !strings.HasSuffix(path, ".proto") {
				return nil
			}
			files = append(files, path)
			return nil
		})
		if err != nil {
			return "", err
		}
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			rel, _ := filepath.Rel(dir, f)
			fmt.Fprintf(h, "%s %d\n", rel, len(b))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// run runs name in dir, after checking that lang's toolchain is
// installed.
func run(ctx context.Context, lang, dir, name string, args ...string) error {
	if err := example.RequireToolchain(lang); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return errors.Join(err, errors.New(strings.TrimSpace(string(out))))
	}
	return nil
}

// Listening reads the line a server in any of the Languages prints once
// it serves, "NAME listening on :PORT" with ", metrics on :PORT" added
// when it serves /metrics, and returns the ports it bound. ok is false for
// any other line. A test starts servers with PORT=0 and METRICS_PORT=0
// and reads the ports from here: a port picked by the test and freed
// before the server binds it can be taken in between (by another test's
// outgoing connection, for one).
func Listening(line string) (port, metricsPort int, ok bool) {
	_, rest, found := strings.Cut(line, " listening on :")
	if !found {
		return 0, 0, false
	}
	grpcPart, metricsPart, hasMetrics := strings.Cut(rest, ", metrics on :")
	port, err := strconv.Atoi(grpcPart)
	if err != nil || port <= 0 || port > 65535 {
		return 0, 0, false
	}
	if !hasMetrics {
		return port, -1, true
	}
	metricsPort, err = strconv.Atoi(metricsPart)
	if err != nil || metricsPort <= 0 || metricsPort > 65535 {
		return 0, 0, false
	}
	return port, metricsPort, true
}

// Server is a server process started by StartServer.
type Server struct {
	// Port and MetricsPort are the ports the server bound; MetricsPort is
	// -1 when it serves no /metrics.
	Port, MetricsPort int

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's, once exited is closed

	mu  sync.Mutex
	out strings.Builder
}

// StartServer starts cmd, a server of any of the Languages, and waits up
// to timeout for its Listening line. cmd's environment should ask for
// PORT=0 (and METRICS_PORT=0, or -1 for none) so that the server picks
// free ports; the Server has the ports it bound. Its stdout and stderr
// are kept (Output). On an error the process is killed and the error
// has what it printed.
func StartServer(cmd *exec.Cmd, timeout time.Duration) (*Server, error) {
	s := &Server{cmd: cmd, exited: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.out.Write(p)
	})
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.mu.Lock()
			s.out.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if port, mport, ok := Listening(sc.Text()); ok && s.Port == 0 {
				s.Port, s.MetricsPort = port, mport
				close(listening)
			}
		}
		s.err = cmd.Wait()
		close(s.exited)
	}()
	select {
	case <-listening:
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("%s exited before listening: %v\n%s", cmd.Path, s.err, s.Output())
	case <-time.After(timeout):
		s.Stop(0)
		return nil, fmt.Errorf("%s did not listen in %v\n%s", cmd.Path, timeout, s.Output())
	}
}

// Output is what the server has printed so far, stdout and stderr.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// Exited is closed when the process has exited; Err is then its Wait's
// error.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Err is the process's Wait error, once Exited is closed.
func (s *Server) Err() error {
	<-s.exited
	return s.err
}

// Stop sends the process SIGTERM, kills it if it has not exited within
// grace, and waits for it to exit.
func (s *Server) Stop(grace time.Duration) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(grace):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
