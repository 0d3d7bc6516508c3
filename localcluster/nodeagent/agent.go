// Package nodeagent is the local cluster's node: a virtual-kubelet
// provider that runs each pod's containers as local processes, each pod in
// its own network namespace (package podnet) and each process in its own
// mount namespace with the pod's service-account token at the usual path.
//
// It honours what the real EndpointSlice controller reads from pods:
// readiness, liveness and startup probes (grpc, httpGet, tcpSocket, exec)
// drive the Ready condition and container statuses; restartPolicy with
// back-off (CrashLoopBackOff); preStop hooks, SIGTERM, and SIGKILL after
// the grace period. Container images resolve through the local image store
// (package images).
//
// Any binary that imports this package becomes the node agent when run as
// "kuberpc-node-agent", and the pod init helper when run as
// "kuberpc-pod-init" (see init).
package nodeagent

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/kuberpc/kuberpc/internal/workloadca"
	"github.com/kuberpc/kuberpc/localcluster/images"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// KubeletVersion is what the node reports.
const KubeletVersion = "v1.37.2"

// Config configures the node agent.
type Config struct {
	Kubeconfig    string
	NodeName      string
	StateDir      string
	ImagesDir     string
	TLSCert       string
	TLSKey        string
	ClientCA      string
	Listen        string
	APIServerPort int
	// ClusterDNS is the nameserver of pods with dnsPolicy ClusterFirst,
	// and ClusterDomain their search domain's root ("cluster.local"); with
	// no ClusterDNS pods use the host's resolv.conf.
	ClusterDNS, ClusterDomain string
	// Self is the command-line prefix that reaches Main in the running
	// executable; the agent starts container processes through
	// "/proc/self/exe SELF... pod-init".
	Self    []string
	Network podnet.Config
	// RestartBackoff is the first crash back-off, doubled per crash up to
	// MaxRestartBackoff.
	RestartBackoff, MaxRestartBackoff time.Duration
	// WorkloadCACert and WorkloadCAKey are the CA that issues pods their
	// workload certificates (csi-driver-spiffe volumes); without them such
	// pods fail to start. WorkloadCertTTL is those certificates' lifetime
	// (0: DefaultWorkloadCertTTL).
	WorkloadCACert, WorkloadCAKey string
	WorkloadCertTTL               time.Duration
	// ContainerLogMaxSize and ContainerLogMaxFiles rotate container logs
	// as the kubelet's settings of those names do: a log is rotated once
	// it holds ContainerLogMaxSize bytes, and ContainerLogMaxFiles files
	// are kept, the one written to included (0: the kubelet's defaults,
	// DefaultContainerLogMaxSize and DefaultContainerLogMaxFiles).
	ContainerLogMaxSize  int64
	ContainerLogMaxFiles int
}

// The kubelet's defaults for container log rotation.
const (
	DefaultContainerLogMaxSize  = 10 << 20
	DefaultContainerLogMaxFiles = 5
)

// Agent is the node agent: the virtual-kubelet provider. Its methods are
// safe for concurrent use.
type Agent struct {
	cfg     Config
	client  kubernetes.Interface
	log     *slog.Logger
	images  images.Store
	ipam    *ipam
	caPEM   []byte
	gateway net.IP
	// workloadCA issues pods their workload certificates; nil without
	// one configured.
	workloadCA *workloadca.CA

	// cgroups is how this host's cgroups are used: "v1", "v2", or ""
	// when it offers neither (resources are not enforced).
	cgroups string
	// events records what happens to pods as the kubelet does (source
	// "kubelet"), for kubectl describe and kubectl get events.
	events record.EventRecorder

	mu       sync.Mutex
	pods     map[string]*podRun
	notifyFn func(*corev1.Pod)
}

// runMain runs the node agent with command-line args until SIGTERM or
// SIGINT, then stops every pod and removes their namespaces. It returns
// the exit code.
func runMain(self, args []string) int {
	cfg, err := parseRunFlags(self, args, os.Stderr)
	if err != nil {
		return 2
	}
	for name, v := range map[string]string{"--kubeconfig": cfg.Kubeconfig, "--state-dir": cfg.StateDir, "--images-dir": cfg.ImagesDir, "--client-ca": cfg.ClientCA} {
		if v == "" {
			fmt.Fprintf(os.Stderr, "%s: %s is required\n", "node agent", name)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", "node agent", err)
		return 1
	}
	return 0
}

// parseRunFlags parses the run command's flags into a Config; a bad one
// is named on errOut and in the error.
func parseRunFlags(self, args []string, errOut io.Writer) (Config, error) {
	fs := flag.NewFlagSet(runCommand, flag.ContinueOnError)
	fs.SetOutput(errOut)
	cfg := Config{Self: self, Network: podnet.Default, RestartBackoff: time.Second, MaxRestartBackoff: 30 * time.Second}
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig with the node's credentials")
	fs.StringVar(&cfg.NodeName, "node-name", "kuberpc-node", "node name")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "where pod logs and tokens are kept")
	fs.StringVar(&cfg.ImagesDir, "images-dir", "", "local image store")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serving certificate for the kubelet API")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "serving key for the kubelet API")
	fs.StringVar(&cfg.ClientCA, "client-ca", "", "CA of clients (the apiserver) and of the cluster")
	fs.StringVar(&cfg.Listen, "listen", ":10250", "kubelet API address")
	fs.IntVar(&cfg.APIServerPort, "apiserver-port", 6443, "apiserver port on the pod gateway")
	fs.StringVar(&cfg.ClusterDNS, "cluster-dns", "", "nameserver for pods with dnsPolicy ClusterFirst (empty: the host's resolv.conf)")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain (and the SPIFFE trust domain of workload certificates)")
	fs.StringVar(&cfg.WorkloadCACert, "workload-ca-cert", "", "CA certificate that issues workload certificates ("+SPIFFEDriver+" volumes)")
	fs.StringVar(&cfg.WorkloadCAKey, "workload-ca-key", "", "key of --workload-ca-cert")
	fs.DurationVar(&cfg.WorkloadCertTTL, "workload-cert-ttl", DefaultWorkloadCertTTL, "lifetime of workload certificates (renewed at 2/3 of it)")
	cfg.ContainerLogMaxSize, cfg.ContainerLogMaxFiles = DefaultContainerLogMaxSize, DefaultContainerLogMaxFiles
	fs.Func("container-log-max-size", "a container log is rotated once it holds this much, a quantity (default 10Mi)", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		if q.Sign() <= 0 {
			return fmt.Errorf("%s: must be positive", v)
		}
		cfg.ContainerLogMaxSize = q.Value()
		return nil
	})
	fs.Func("container-log-max-files", "container log files kept, the one written to included, at least 2 (default 5)", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		if n < 2 {
			return fmt.Errorf("%d: must be at least 2 (the file written to and one rotated)", n)
		}
		cfg.ContainerLogMaxFiles = n
		return nil
	})
	err := fs.Parse(args)
	return cfg, err
}

// Run runs the node agent until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ContainerLogMaxSize == 0 {
		cfg.ContainerLogMaxSize = DefaultContainerLogMaxSize
	}
	if cfg.ContainerLogMaxFiles == 0 {
		cfg.ContainerLogMaxFiles = DefaultContainerLogMaxFiles
	}
	if err := checkLogRotation(cfg.ContainerLogMaxSize, cfg.ContainerLogMaxFiles); err != nil {
		return fmt.Errorf("container log rotation (ContainerLogMaxSize, ContainerLogMaxFiles): %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", cfg.NodeName)
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(cfg.ClientCA)
	if err != nil {
		return fmt.Errorf("client CA: %w", err)
	}
	var wca *workloadca.CA
	if cfg.WorkloadCACert != "" || cfg.WorkloadCAKey != "" {
		certPEM, err := os.ReadFile(cfg.WorkloadCACert)
		if err != nil {
			return fmt.Errorf("workload CA: %w", err)
		}
		keyPEM, err := os.ReadFile(cfg.WorkloadCAKey)
		if err != nil {
			return fmt.Errorf("workload CA: %w", err)
		}
		if wca, err = workloadca.Load(certPEM, keyPEM); err != nil {
			return fmt.Errorf("workload CA %s: %w", cfg.WorkloadCACert, err)
		}
	}
	if err := podnet.EnsureBridge(cfg.Network); err != nil {
		return err
	}
	a := &Agent{workloadCA: wca,
		cfg: cfg, client: cs, log: log, images: images.Store{Dir: cfg.ImagesDir},
		ipam: newIPAM(cfg.Network.CIDR), caPEM: caPEM, gateway: cfg.Network.Gateway(),
		pods: map[string]*podRun{}, cgroups: cgroupMode(),
	}
	if a.cgroups == "" {
		log.Warn("this host offers no usable cgroups (v1 cpu, cpuacct and memory, or v2): pod resources are not enforced")
	} else {
		log.Info("pod resources enforced with cgroups", "mode", a.cgroups)
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	a.events = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: cfg.NodeName})
	// The pods an earlier agent left running are adopted; every other pod
	// namespace is stale.
	adopted := a.adoptPods(ctx)
	if err := podnet.RemoveNamespaces(adopted); err != nil {
		log.Warn("remove stale pod namespaces", "err", err)
	}
	// Every request is authenticated and authorized as a kubelet's with
	// --authorization-mode=Webhook: a client certificate from the
	// cluster's CA or a bearer token (TokenReview), then the apiserver's
	// SubjectAccessReview on the node's subresource (nodes/proxy for
	// logs, port-forward and pods; nodes/metrics, nodes/stats, nodes/log).
	// A certificate from the cluster's CA alone (any user's, from an
	// approved CertificateSigningRequest) no longer reaches every pod.
	auth, err := nodeutil.WebhookAuth(cs, cfg.NodeName, func(c *nodeutil.WebhookAuthConfig) error {
		ca, err := dynamiccertificates.NewStaticCAContent("client-ca", caPEM)
		if err != nil {
			return fmt.Errorf("client CA %s: %w", cfg.ClientCA, err)
		}
		c.AuthnConfig.ClientCertificateCAContentProvider = ca
		return nil
	})
	if err != nil {
		return fmt.Errorf("kubelet API authorization: %w", err)
	}
	httpMux := http.NewServeMux()
	n, err := nodeutil.NewNode(cfg.NodeName, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		a.describeNode(pc.Node)
		return a, nil, nil
	},
		nodeutil.WithClient(cs),
		nodeutil.AttachProviderRoutes(httpMux),
		nodeutil.WithTLSConfig(nodeutil.WithKeyPairFromPath(cfg.TLSCert, cfg.TLSKey), nodeutil.WithCACert(caPEM),
			func(c *tls.Config) error {
				// A certificate is verified when given: a bearer token
				// is a client's other credential.
				c.ClientAuth = tls.VerifyClientCertIfGiven
				return nil
			}),
		func(c *nodeutil.NodeConfig) error {
			c.HTTPListenAddr = cfg.Listen
			c.Handler = nodeutil.WithAuth(auth, httpMux)
			c.SkipDownwardAPIResolution = true // done here, where the pod IP is known
			c.InformerResyncPeriod = time.Minute
			c.EventRecorder = a.events
			return nil
		},
	)
	if err != nil {
		return err
	}
	log.Info("node agent starting", "listen", cfg.Listen)
	// The agent's pods outlive it, as the kubelet's do: the next agent
	// adopts them; StopPods stops them for good.
	err = n.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// allocatable is what the node offers pods: all its CPUs and memory.
func (a *Agent) allocatable() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
}

// describeNode fills the Node object virtual-kubelet registers.
func (a *Agent) describeNode(n *corev1.Node) {
	n.Status.Capacity = a.allocatable()
	n.Status.Allocatable = n.Status.Capacity.DeepCopy()
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: a.gateway.String()},
		{Type: corev1.NodeHostName, Address: a.cfg.NodeName},
	}
	_, port, _ := net.SplitHostPort(a.cfg.Listen)
	p, _ := strconv.Atoi(port)
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(p)
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		KubeletVersion: KubeletVersion, OperatingSystem: "linux", Architecture: runtime.GOARCH,
		ContainerRuntimeVersion: "kuberpc-process://1",
	}
	// NodeRestriction lets a node set only its own kubernetes.io labels.
	delete(n.Labels, "kubernetes.io/role")
	n.Labels["kubernetes.io/os"] = "linux"
	n.Labels["kubernetes.io/arch"] = runtime.GOARCH
	n.Labels["node.kubernetes.io/instance-type"] = "kuberpc-local"
	n.Labels["topology.kubernetes.io/zone"] = "local-a"
	cg := a.cgroups
	if cg == "" {
		cg = "none: pod resources are not enforced on this host"
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations["kuberpc.dev/cgroups"] = cg
	now := metav1.Now()
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if c.Type != corev1.NodeReady {
			c.Status = corev1.ConditionFalse
			c.Reason = "KubeletHasSufficientResources"
			c.LastHeartbeatTime, c.LastTransitionTime = now, now
		}
	}
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 4 << 30
	}
	var kb int64
	if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err != nil {
		return 4 << 30
	}
	return kb * 1024
}

func (a *Agent) podDir(pod *corev1.Pod) string {
	return filepath.Join(a.cfg.StateDir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID))
}

func key(ns, name string) string { return ns + "/" + name }
