// Package cluster runs the kuberpc local Kubernetes: a real etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler built from Go
// modules (see package binaries), and a node agent (package nodeagent)
// that runs pods as local processes in their own network namespaces.
//
// Everything lives under one state directory: PKI, kubeconfigs, etcd data,
// logs and pid files. Up is idempotent (components already running are
// kept) and Down stops every process it started, by pid, and removes the
// pod network.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kuberpc/kuberpc/localcluster/binaries"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
	"github.com/kuberpc/kuberpc/localcluster/pki"
)

// Fixed addresses of the local cluster.
const (
	// APIServerPort is the apiserver's secure port, on every host address,
	// including the pod bridge's gateway.
	APIServerPort = 6443
	// EtcdClientPort and EtcdPeerPort are etcd's ports, on loopback only.
	EtcdClientPort = 23790
	EtcdPeerPort   = 23800
	// NodeName is the name of the one node.
	NodeName = "kuberpc-node"
	// ServiceCIDR is the ClusterIP range.
	ServiceCIDR = "198.19.0.0/16"
	// NodeAgentPort is the node agent's kubelet API port (logs, exec).
	NodeAgentPort = 10250
)

// componentNames are the processes of the cluster, in the order Up starts
// them (Down stops them in reverse).
var componentNames = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent", "kube-proxy", "coredns", "metrics-server", "metrics-adapter"}

// ErrNotRunning is returned by Status when the control plane is down.
var ErrNotRunning = errors.New("local cluster is not running")

// Options configures Up and Down. The zero value works anywhere: the
// control plane is built from modules embedded in package binaries.
type Options struct {
	// StateDir holds everything the cluster writes. Default:
	// $KUBERPC_HOME/cluster, or ~/.kuberpc/cluster.
	StateDir string
	// CacheDir caches built binaries. Default: ~/.cache/kuberpc/bin.
	CacheDir string
	// NodeAgent is the command line that reaches nodeagent.Main in some
	// executable, e.g. {"/usr/local/bin/kuberpc", "cluster", "node-agent"}
	// for the CLI's hidden command; the agent is started as NodeAgent
	// followed by "run" and its flags. Required by Up.
	NodeAgent []string
	// MetricsAdapter is the command line that reaches metricsadapter.Main,
	// e.g. {"/usr/local/bin/kuberpc", "metrics-adapter"}; the adapter is
	// started with its flags after it. Without it the cluster serves no
	// custom.metrics.k8s.io.
	MetricsAdapter []string
	// Progress receives progress lines. Default: discarded.
	Progress io.Writer
	// MergeKubeconfig adds the cluster to ~/.kube/config (or $KUBECONFIG)
	// as context "kuberpc" and makes it current, as kind and minikube do.
	MergeKubeconfig bool
	// WorkloadCertTTL is the lifetime of the workload certificates the
	// node agent issues pods (csi-driver-spiffe volumes). Default
	// nodeagent.DefaultWorkloadCertTTL, an hour; tests of rotation make
	// it seconds.
	WorkloadCertTTL time.Duration
}

// workloadCertTTL is Options.WorkloadCertTTL or its default.
func (c *Cluster) workloadCertTTL() time.Duration {
	if c.opts.WorkloadCertTTL > 0 {
		return c.opts.WorkloadCertTTL
	}
	return nodeagent.DefaultWorkloadCertTTL
}

func (o *Options) defaults() error {
	if o.StateDir == "" {
		home := os.Getenv("KUBERPC_HOME")
		if home == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return err
			}
			home = filepath.Join(h, ".kuberpc")
		}
		o.StateDir = filepath.Join(home, "cluster")
	}
	if o.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return err
		}
		o.CacheDir = filepath.Join(d, "kuberpc", "bin")
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// Cluster is a local cluster's files and addresses.
type Cluster struct {
	// StateDir is the cluster's state directory.
	StateDir string
	// Kubeconfig is the admin kubeconfig (system:masters).
	Kubeconfig string
	// Bin holds etcd, kubectl and the control-plane binaries.
	Bin binaries.Set
	// Server is the apiserver URL as seen from the host.
	Server string

	opts  Options
	pki   paths
	admin *http.Client // for readiness checks
}

type paths struct {
	ca, apiserver, kubeletServing, kubeletClient, admin, controllerManager, scheduler, node, proxy, coreDNS pki.Pair
	// frontProxyCA signs frontProxyClient, the identity the apiserver
	// proxies aggregated APIs (metrics.k8s.io) with.
	frontProxyCA, frontProxyClient, metricsServing, metricsClient, adapterServing, adapterClient pki.Pair
	sa, workloadCA                                                                               pki.Pair
}

// Open returns the Cluster of opts without starting anything.
func Open(opts Options) (*Cluster, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	c := &Cluster{
		StateDir:   opts.StateDir,
		Kubeconfig: filepath.Join(opts.StateDir, "admin.kubeconfig"),
		Server:     "https://127.0.0.1:" + strconv.Itoa(APIServerPort),
		opts:       opts,
	}
	return c, nil
}

// Up starts the cluster (building binaries on first use) and returns when
// the apiserver is ready and the node is Ready. Components already
// running are kept.
func Up(ctx context.Context, opts Options) (*Cluster, error) {
	if len(opts.NodeAgent) == 0 {
		return nil, errors.New("cluster.Up: Options.NodeAgent is required (the command line that runs the node agent)")
	}
	c, err := Open(opts)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"pki", "run", "logs", "etcd"} {
		if err := os.MkdirAll(filepath.Join(c.StateDir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if c.Bin, err = c.ensureBinaries(ctx); err != nil {
		return nil, err
	}
	if err := c.writePKI(); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	if err := c.writeCorefile(); err != nil {
		return nil, fmt.Errorf("cluster DNS: %w", err)
	}
	if err := podnet.EnsureBridge(podnet.Default); err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	// ClusterIPs are routed onto the bridge, so that traffic to a Service
	// with no rule yet stays on this machine instead of taking the host's
	// default route.
	if err := podnet.RouteToBridge(podnet.Default, ServiceCIDR); err != nil {
		return nil, fmt.Errorf("service route: %w", err)
	}
	steps := c.steps()
	for _, s := range steps {
		if _, ok := c.pid(s.name); ok {
			fmt.Fprintf(c.opts.Progress, "%s already running\n", s.name)
		} else {
			fmt.Fprintf(c.opts.Progress, "starting %s\n", s.name)
			if _, err := c.start(s.proc()); err != nil {
				return nil, err
			}
		}
		if s.ready != nil {
			rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			err := c.waitFor(rctx, s.name, s.ready)
			cancel()
			if err != nil {
				return nil, err
			}
		}
	}
	if c.opts.MergeKubeconfig {
		if err := c.mergeKubeconfig(); err != nil {
			return nil, fmt.Errorf("merge kubeconfig: %w", err)
		}
	}
	return c, nil
}

// step is a component: how to run it and how to tell it is ready.
type step struct {
	name  string
	proc  func() process
	ready func(context.Context) error
}

// steps are the components in the order Up starts them (componentNames).
func (c *Cluster) steps() []step {
	steps := []step{
		{"etcd", c.etcd, c.etcdReady},
		{"kube-apiserver", c.apiserver, c.apiserverReady},
		{"kube-controller-manager", c.controllerManager, nil},
		{"kube-scheduler", c.scheduler, nil},
		{"node-agent", c.nodeAgent, c.nodeReady},
		{"kube-proxy", c.kubeProxy, c.kubeProxyReady},
		{"coredns", c.coreDNS, c.coreDNSReady},
		{"metrics-server", c.metricsServer, c.metricsServerReady},
	}
	if len(c.opts.MetricsAdapter) > 0 {
		steps = append(steps, step{"metrics-adapter", c.metricsAdapter, c.metricsAdapterReady})
	}
	return steps
}

// Restart stops the named component of a running cluster (SIGTERM, then
// SIGKILL after 10s), starts it again and waits until it is ready: the
// fault suite's apiserver and etcd restarts.
func (c *Cluster) Restart(ctx context.Context, name string) error {
	for _, s := range c.steps() {
		if s.name != name {
			continue
		}
		if err := c.stop(name, 10*time.Second); err != nil {
			return err
		}
		if _, err := c.start(s.proc()); err != nil {
			return err
		}
		if s.ready == nil {
			return nil
		}
		rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		return c.waitFor(rctx, name, s.ready)
	}
	return fmt.Errorf("no component %q; the components are %s", name, strings.Join(componentNames, ", "))
}

// Binaries returns the control-plane binaries for opts, building the
// missing ones (with progress on opts.Progress) into opts.CacheDir.
func Binaries(ctx context.Context, opts Options) (binaries.Set, error) {
	c, err := Open(opts)
	if err != nil {
		return binaries.Set{}, err
	}
	return c.ensureBinaries(ctx)
}

func (c *Cluster) ensureBinaries(ctx context.Context) (binaries.Set, error) {
	return binaries.Ensure(ctx, c.opts.CacheDir, c.opts.Progress)
}

// waitFor polls ready until it succeeds, the component's process dies (the
// error then quotes its log), or ctx ends.
func (c *Cluster) waitFor(ctx context.Context, name string, ready func(context.Context) error) error {
	var last error
	for {
		if last = ready(ctx); last == nil {
			fmt.Fprintf(c.opts.Progress, "%s ready\n", name)
			return nil
		}
		if _, ok := c.pid(name); !ok {
			return fmt.Errorf("%s exited; last lines of %s:\n%s", name, c.LogFile(name), tail(c.LogFile(name), 15))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v; see %s", name, last, c.LogFile(name))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Down stops the node agent and every pod, the control plane
// and etcd, and removes the pod network. With purge it also deletes the
// state directory (etcd data, PKI, kubeconfigs).
func Down(opts Options, purge bool) error {
	c, err := Open(opts)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range slices.Backward(componentNames) {
		if err := c.stop(name, 30*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	// The node agent leaves its pods running when it stops, as the
	// kubelet does; down stops them too.
	nodeagent.StopPods(filepath.Join(c.StateDir, "node"), 5*time.Second)
	// kube-proxy leaves its nftables tables behind when it stops; its
	// --cleanup removes them (and only them).
	if proxies, _ := filepath.Glob(filepath.Join(c.opts.CacheDir, "*", "kube-proxy")); len(proxies) > 0 {
		cmd := exec.Command(proxies[0], "--cleanup", "--proxy-mode=nftables")
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("kube-proxy --cleanup: %v: %s", err, out))
		}
	}
	if err := podnet.Teardown(podnet.Default); err != nil {
		errs = append(errs, fmt.Errorf("pod network: %w", err))
	}
	if purge {
		errs = append(errs, os.RemoveAll(c.StateDir))
	}
	return errors.Join(errs...)
}

// Component is one process of the cluster and whether it runs.
type Component struct {
	Name    string
	PID     int
	Running bool
}

// Status lists the cluster's components; it returns ErrNotRunning when
// none runs.
func Status(opts Options) ([]Component, error) {
	c, err := Open(opts)
	if err != nil {
		return nil, err
	}
	var out []Component
	anyUp := false
	for _, name := range componentNames {
		pid, ok := c.pid(name)
		out = append(out, Component{Name: name, PID: pid, Running: ok})
		anyUp = anyUp || ok
	}
	if !anyUp {
		return out, ErrNotRunning
	}
	return out, nil
}

// checkHealth GETs url with hc and wants 200; the error quotes the body.
func checkHealth(ctx context.Context, hc *http.Client, what, url string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s %s", what, resp.Status, body)
	}
	return nil
}

func (c *Cluster) etcdReady(ctx context.Context) error {
	return checkHealth(ctx, http.DefaultClient, "etcd /health", fmt.Sprintf("http://127.0.0.1:%d/health", EtcdClientPort))
}

func (c *Cluster) adminHTTP() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(c.pki.admin.CertFile, c.pki.admin.KeyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(c.pki.ca.CertFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}}, nil
}

func (c *Cluster) apiserverReady(ctx context.Context) error {
	if c.admin == nil { // built once, not on every poll
		hc, err := c.adminHTTP()
		if err != nil {
			return err
		}
		c.admin = hc
	}
	return checkHealth(ctx, c.admin, "apiserver /readyz", c.Server+"/readyz")
}

func hostIPs() []net.IP {
	return []net.IP{net.ParseIP("127.0.0.1"), podnet.Default.Gateway(), net.ParseIP("198.19.0.1")}
}

func tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ") + "\n"
}
