// Package e2e proves the local cluster against its real parts: the
// apiserver, controllers, scheduler and the node agent. The cluster is
// started once for the package (like controller-runtime's envtest) and
// stopped at the end when this package started it; every test works in a
// namespace of its own.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/localcluster/images"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

var (
	lc     *cluster.Cluster
	client kubernetes.Interface
	repo   string // the kuberpc checkout
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: the local cluster needs root (network namespaces, bridge)")
		return 1
	}
	wd, _ := os.Getwd()
	repo = filepath.Clean(filepath.Join(wd, "..", ".."))
	opts := cluster.Options{Progress: os.Stderr, SourceDir: repo}
	_, statusErr := cluster.Status(opts)
	startedHere := errors.Is(statusErr, cluster.ErrNotRunning)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var err error
	if lc, err = cluster.Up(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cluster up:", err)
		if startedHere {
			cluster.Down(opts, false)
		}
		return 1
	}
	if client, err = lc.Client(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if err := registerImages(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: images:", err)
		return 1
	}
	code := m.Run()
	if startedHere {
		if err := cluster.Down(opts, false); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: cluster down:", err)
			return 1
		}
		if err := checkNothingLeft(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: after cluster down:", err)
			return 1
		}
	}
	return code
}

// registerImages builds the example server and registers the images the
// tests deploy.
func registerImages() error {
	binDir := filepath.Join(filepath.Dir(lc.StateDir), "e2e-bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	server := filepath.Join(binDir, "example-server")
	build := exec.Command("go", "build", "-o", server, "./examples/example/server")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build example server: %v\n%s", err, out)
	}
	store := images.Store{Dir: cluster.ImagesDir(lc.StateDir)}
	for _, img := range []images.Image{
		{Ref: "kuberpc.local/example:v1", Entrypoint: []string{server}},
		{Ref: "kuberpc.local/example:v2", Entrypoint: []string{server}, Env: []string{"EXAMPLE_VERSION=v2"}},
		{Ref: "kuberpc.local/example-python:v1", Entrypoint: []string{"/usr/bin/python3", filepath.Join(repo, "examples/example/python/server.py")}},
		{Ref: "kuberpc.local/kubectl:v1", Entrypoint: []string{lc.Bin.Path("kubectl")}},
	} {
		if err := store.Put(img); err != nil {
			return err
		}
	}
	return nil
}

// checkNothingLeft verifies that cluster down left no listener on the
// cluster's ports, no pod namespace and no bridge.
func checkNothingLeft() error {
	var errs []error
	for _, port := range []int{cluster.APIServerPort, cluster.EtcdClientPort, cluster.EtcdPeerPort} {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond); err == nil {
			c.Close()
			errs = append(errs, fmt.Errorf("port %d still listening", port))
		}
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), podnet.NamespacePrefix) {
			errs = append(errs, fmt.Errorf("network namespace %s left behind", e.Name()))
		}
	}
	if _, err := net.InterfaceByName(podnet.Default.Bridge); err == nil {
		errs = append(errs, fmt.Errorf("bridge %s left behind", podnet.Default.Bridge))
	}
	return errors.Join(errs...)
}
