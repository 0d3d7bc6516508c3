package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
	"github.com/kuberpc/kuberpc/localcluster/pki"
)

func (c *Cluster) pkiDir() string { return filepath.Join(c.StateDir, "pki") }

func (c *Cluster) kubeconfigFor(name string) string {
	return filepath.Join(c.StateDir, name+".kubeconfig")
}

// writePKI creates (or keeps) every certificate and kubeconfig.
func (c *Cluster) writePKI() error {
	dir := c.pkiDir()
	ca, err := pki.LoadOrCreateCA(dir, "ca", "kuberpc-local-ca")
	if err != nil {
		return err
	}
	c.pki.ca = pki.Pair{CertFile: ca.CertFile, KeyFile: ca.KeyFile}
	issue := []struct {
		dst  *pki.Pair
		name string
		spec pki.Spec
	}{
		{&c.pki.apiserver, "apiserver", pki.Spec{CommonName: "kube-apiserver", Server: true, IPs: hostIPs(),
			DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}}},
		{&c.pki.kubeletServing, "node-serving", pki.Spec{CommonName: NodeName, Server: true, IPs: hostIPs(), DNSNames: []string{NodeName, "localhost"}}},
		{&c.pki.kubeletClient, "apiserver-kubelet-client", pki.Spec{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true}},
		{&c.pki.admin, "admin", pki.Spec{CommonName: "kuberpc-admin", Organization: []string{"system:masters"}, Client: true}},
		{&c.pki.controllerManager, "controller-manager", pki.Spec{CommonName: "system:kube-controller-manager", Client: true}},
		{&c.pki.scheduler, "scheduler", pki.Spec{CommonName: "system:kube-scheduler", Client: true}},
		{&c.pki.node, "node", pki.Spec{CommonName: "system:node:" + NodeName, Organization: []string{"system:nodes"}, Client: true}},
		{&c.pki.proxy, "kube-proxy", pki.Spec{CommonName: "system:kube-proxy", Client: true}},
		{&c.pki.coreDNS, "coredns", pki.Spec{CommonName: dnsUser, Client: true}},
		{&c.pki.metricsServing, "metrics-server-serving", pki.Spec{CommonName: "metrics-server", Server: true, IPs: hostIPs(), DNSNames: metricsServingNames}},
		{&c.pki.metricsClient, "metrics-server", pki.Spec{CommonName: metricsServerUser, Client: true}},
		{&c.pki.adapterServing, "metrics-adapter-serving", pki.Spec{CommonName: "kuberpc-metrics-adapter", Server: true, IPs: hostIPs(), DNSNames: metricsAdapterServingNames}},
		{&c.pki.adapterClient, "metrics-adapter", pki.Spec{CommonName: metricsAdapterUser, Client: true}},
	}
	for _, i := range issue {
		if *i.dst, err = ca.Issue(dir, i.name, i.spec); err != nil {
			return err
		}
	}
	// The aggregation layer's own CA: the apiserver proxies to
	// metrics-server with a front-proxy-client certificate, which
	// metrics-server trusts through --requestheader-client-ca-file (read
	// from kube-system/extension-apiserver-authentication).
	fp, err := pki.LoadOrCreateCA(dir, "front-proxy-ca", "kuberpc-front-proxy-ca")
	if err != nil {
		return err
	}
	c.pki.frontProxyCA = pki.Pair{CertFile: fp.CertFile, KeyFile: fp.KeyFile}
	if c.pki.frontProxyClient, err = fp.Issue(dir, "front-proxy-client", pki.Spec{CommonName: "front-proxy-client", Client: true}); err != nil {
		return err
	}
	if c.pki.sa, err = pki.ServiceAccountKey(dir); err != nil {
		return err
	}
	// The workload CA issues pods their SPIFFE certificates (the node
	// agent serves csi-driver-spiffe volumes with it): a CA of its own, so
	// that trusting workloads never means trusting the control plane's
	// clients.
	wca, err := pki.LoadOrCreateCA(dir, "workload-ca", "kuberpc-workload-ca")
	if err != nil {
		return err
	}
	c.pki.workloadCA = pki.Pair{CertFile: wca.CertFile, KeyFile: wca.KeyFile}
	for name, p := range map[string]pki.Pair{
		"admin": c.pki.admin, "controller-manager": c.pki.controllerManager,
		"scheduler": c.pki.scheduler, "node": c.pki.node, "kube-proxy": c.pki.proxy, "coredns": c.pki.coreDNS,
		"metrics-server": c.pki.metricsClient, "metrics-adapter": c.pki.adapterClient,
	} {
		if err := c.writeKubeconfig(c.kubeconfigFor(name), p); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) writeKubeconfig(path string, p pki.Pair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kuberpc"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthority: c.pki.ca.CertFile}
	cfg.AuthInfos["kuberpc"] = &clientcmdapi.AuthInfo{ClientCertificate: p.CertFile, ClientKey: p.KeyFile}
	cfg.Contexts["kuberpc"] = &clientcmdapi.Context{Cluster: "kuberpc", AuthInfo: "kuberpc", Namespace: "default"}
	cfg.CurrentContext = "kuberpc"
	return clientcmd.WriteToFile(*cfg, path)
}

// mergeKubeconfig adds context "kuberpc" to the user's kubeconfig and makes
// it current.
func (c *Cluster) mergeKubeconfig() error {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	path := rules.GetDefaultFilename()
	cfg, err := clientcmd.LoadFromFile(path)
	if os.IsNotExist(err) {
		cfg, err = clientcmdapi.NewConfig(), nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	cfg.Clusters["kuberpc"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthority: c.pki.ca.CertFile}
	cfg.AuthInfos["kuberpc"] = &clientcmdapi.AuthInfo{ClientCertificate: c.pki.admin.CertFile, ClientKey: c.pki.admin.KeyFile}
	cfg.Contexts["kuberpc"] = &clientcmdapi.Context{Cluster: "kuberpc", AuthInfo: "kuberpc", Namespace: "default"}
	cfg.CurrentContext = "kuberpc"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, path)
}

func (c *Cluster) etcd() process {
	return process{name: "etcd", path: c.Bin.Path("etcd"), args: []string{
		"--name=kuberpc", "--data-dir=" + filepath.Join(c.StateDir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:" + strconv.Itoa(EtcdClientPort),
		"--advertise-client-urls=http://127.0.0.1:" + strconv.Itoa(EtcdClientPort),
		"--listen-peer-urls=http://127.0.0.1:" + strconv.Itoa(EtcdPeerPort),
		"--initial-advertise-peer-urls=http://127.0.0.1:" + strconv.Itoa(EtcdPeerPort),
		"--initial-cluster=kuberpc=http://127.0.0.1:" + strconv.Itoa(EtcdPeerPort),
		"--log-level=warn", "--quota-backend-bytes=2147483648",
		"--unsafe-no-fsync", // a throwaway local cluster: trade durability for speed on slow disks
	}}
}

func (c *Cluster) apiserver() process {
	gw := podnet.Default.Gateway().String()
	return process{name: "kube-apiserver", path: c.Bin.Path("kube-apiserver"), args: []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(EtcdClientPort),
		"--bind-address=0.0.0.0", "--secure-port=" + strconv.Itoa(APIServerPort), "--advertise-address=" + gw,
		"--tls-cert-file=" + c.pki.apiserver.CertFile, "--tls-private-key-file=" + c.pki.apiserver.KeyFile,
		"--client-ca-file=" + c.pki.ca.CertFile,
		"--service-account-key-file=" + c.pki.sa.CertFile,
		"--service-account-signing-key-file=" + c.pki.sa.KeyFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--kubelet-client-certificate=" + c.pki.kubeletClient.CertFile,
		"--kubelet-client-key=" + c.pki.kubeletClient.KeyFile,
		"--kubelet-certificate-authority=" + c.pki.ca.CertFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--enable-admission-plugins=NodeRestriction",
		// The aggregation layer, for metrics.k8s.io and custom.metrics.k8s.io.
		"--requestheader-client-ca-file=" + c.pki.frontProxyCA.CertFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + c.pki.frontProxyClient.CertFile,
		"--proxy-client-key-file=" + c.pki.frontProxyClient.KeyFile,
		"--enable-aggregator-routing=true",
		"--profiling=false",
		"--v=1",
	}}
}

func (c *Cluster) controllerManager() process {
	kc := c.kubeconfigFor("controller-manager")
	return process{name: "kube-controller-manager", path: c.Bin.Path("kube-controller-manager"), args: []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--service-account-private-key-file=" + c.pki.sa.KeyFile,
		"--root-ca-file=" + c.pki.ca.CertFile,
		"--cluster-signing-cert-file=" + c.pki.ca.CertFile, "--cluster-signing-key-file=" + c.pki.ca.KeyFile,
		"--use-service-account-credentials=true",
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10257",
		"--horizontal-pod-autoscaler-sync-period=5s",
		"--profiling=false", "--v=1",
	}}
}

func (c *Cluster) scheduler() process {
	kc := c.kubeconfigFor("scheduler")
	return process{name: "kube-scheduler", path: c.Bin.Path("kube-scheduler"), args: []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10259",
		"--profiling=false", "--v=1",
	}}
}

func (c *Cluster) nodeAgent() process {
	return process{name: "node-agent", path: c.opts.NodeAgent[0], args: append(append(slices.Clone(c.opts.NodeAgent[1:]), "run",
		"--kubeconfig="+c.kubeconfigFor("node"),
		"--node-name="+NodeName,
		"--state-dir="+filepath.Join(c.StateDir, "node"),
		"--images-dir="+ImagesDir(c.StateDir),
		"--tls-cert="+c.pki.kubeletServing.CertFile, "--tls-key="+c.pki.kubeletServing.KeyFile,
		"--client-ca="+c.pki.ca.CertFile,
		"--workload-ca-cert="+c.pki.workloadCA.CertFile, "--workload-ca-key="+c.pki.workloadCA.KeyFile,
		"--workload-cert-ttl="+c.workloadCertTTL().String(),
		"--listen="+net.JoinHostPort(podnet.Default.Gateway().String(), strconv.Itoa(NodeAgentPort)),
		"--apiserver-port="+strconv.Itoa(APIServerPort),
	), clusterDNSFlags()...)}
}

// ImagesDir is the local image store of the cluster in stateDir.
func ImagesDir(stateDir string) string { return filepath.Join(filepath.Dir(stateDir), "images") }

// Client returns an admin clientset.
func (c *Cluster) Client() (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	return kubernetes.NewForConfig(cfg)
}

// nodeReady grants the node agent what virtual-kubelet's informers list
// beyond the Node authorizer, then waits for the node to be Ready.
func (c *Cluster) nodeReady(ctx context.Context) error {
	// The kubelet API listens once the agent has adopted its pods and
	// started; the Node's Ready condition may still be a previous
	// agent's.
	addr := net.JoinHostPort(podnet.Default.Gateway().String(), strconv.Itoa(NodeAgentPort))
	conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("node agent API %s: %w", addr, err)
	}
	conn.Close()
	cs, err := c.Client()
	if err != nil {
		return err
	}
	if err := c.ensureNodeRBAC(ctx, cs); err != nil {
		return err
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("node %s not Ready", NodeName)
}

func (c *Cluster) ensureNodeRBAC(ctx context.Context, cs kubernetes.Interface) error {
	return grantClusterRole(ctx, cs, "kuberpc:node-agent", "system:node:"+NodeName, []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"configmaps", "secrets", "services"},
		Verbs: []string{"list", "watch"},
	}})
}

// grantClusterRole creates, once, the ClusterRole name with rules and
// binds it to user: what each component of the local cluster needs
// beyond the bootstrap roles, and no more.
func grantClusterRole(ctx context.Context, cs kubernetes.Interface, name, user string, rules []rbacv1.PolicyRule) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return bindClusterRole(ctx, cs, name, name, user)
}

// bindClusterRole creates, once, the ClusterRoleBinding name of role to
// user.
func bindClusterRole(ctx context.Context, cs kubernetes.Interface, name, role, user string) error {
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// kubeProxy runs the real kube-proxy in nftables mode, so that ClusterIP
// Services work from the host as on a node. It only adds its own nftables
// tables, and is told to leave the host's conntrack sysctls alone.
func (c *Cluster) kubeProxy() process {
	gw := podnet.Default.Gateway().String()
	return process{name: "kube-proxy", path: c.Bin.Path("kube-proxy"), args: []string{
		"--kubeconfig=" + c.kubeconfigFor("kube-proxy"),
		"--proxy-mode=nftables",
		"--hostname-override=" + NodeName,
		"--cluster-cidr=" + podnet.Default.CIDR.String(),
		"--nodeport-addresses=" + gw + "/32",
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--metrics-bind-address=127.0.0.1:10249",
		"--healthz-bind-address=127.0.0.1:10256",
		"--v=1",
	}}
}

func (c *Cluster) kubeProxyReady(ctx context.Context) error {
	return checkHealth(ctx, http.DefaultClient, "kube-proxy /healthz", "http://127.0.0.1:10256/healthz")
}
