package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/roundrobin"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// probe is round_robin that reports when its ClientConn state contains an
// address: the moment the balancer (and so the picker) has it.
type probeBuilder struct{}

var probeSeen sync.Map // address -> chan time.Time

func (probeBuilder) Name() string { return "kuberpc_bench_probe" }

func (probeBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return &probe{Balancer: balancer.Get(roundrobin.Name).Build(cc, opts)}
}

type probe struct{ balancer.Balancer }

func (p *probe) UpdateClientConnState(s balancer.ClientConnState) error {
	err := p.Balancer.UpdateClientConnState(s)
	now := time.Now()
	for _, e := range s.ResolverState.Endpoints {
		for _, a := range e.Addresses {
			if ch, ok := probeSeen.Load(a.Addr); ok {
				select {
				case ch.(chan time.Time) <- now:
				default:
				}
			}
		}
	}
	return err
}

func init() { balancer.Register(probeBuilder{}) }

// NodeAgentCommand is the argument under which a program that runs
// Convergence must run the local cluster's node agent, through
// RunSubcommand: Convergence starts the cluster with this executable as
// the agent when none runs.
const NodeAgentCommand = "node-agent"

// RunSubcommand runs what the benchmarks start this executable for, and
// exits, when the program was started as "PROGRAM node-agent ..." (the
// local cluster's node agent, for Convergence) or "PROGRAM overload-server
// ..." (Overload's server process), "PROGRAM overhead-case ..." (an
// overhead case measured in a process of its own) or "PROGRAM
// overhead-server ..." (OverheadApart's server processes); otherwise it
// returns at once. Call it first in main or TestMain.
func RunSubcommand() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case NodeAgentCommand:
		os.Exit(nodeagent.Main([]string{NodeAgentCommand}, os.Args[2:]))
	case overloadServerCommand:
		if err := serveOverload(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "overload server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case overheadServerCommand:
		if err := serveOverheadServer(os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "overhead server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case overheadCaseCommand:
		if err := runOverheadCase(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "overhead case:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// Convergence measures, against the local cluster's real apiserver, the
// time from an EndpointSlice write to a kuberpc client's balancer holding
// the new endpoint, ÷ the time a plain client-go informer in the same
// process takes to deliver the same write. It starts the local cluster
// when none runs (and stops it after); it needs root.
func Convergence(s Scale, progress io.Writer) ([]Row, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("convergence needs the local cluster, which needs root")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	opts := cluster.Options{Progress: io.Discard, NodeAgent: []string{exe, NodeAgentCommand}}
	_, statusErr := cluster.Status(opts)
	lc, err := cluster.Up(context.Background(), opts)
	if err != nil {
		return nil, err
	}
	if errors.Is(statusErr, cluster.ErrNotRunning) {
		defer cluster.Down(opts, false)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", lc.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	// A fresh namespace each run: a deleted one lingers while it
	// terminates.
	ns, svc := fmt.Sprintf("kuberpc-bench-%d", time.Now().UnixNano()%1e6), "conv"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	defer cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	// A Service without a selector: its EndpointSlice is ours to write.
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: svc},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 50051, TargetPort: intstr.FromInt32(50051)}}}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	name, port, yes := "grpc", int32(50051), true
	marker := func(i int) string { return fmt.Sprintf("198.18.255.%d", 2+i%250) }
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-bench", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{marker(0)}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}}},
	}
	// The markers are unassigned addresses on the pod bridge: the client's
	// connection attempts stay on this machine.
	if err := podnet.CheckRouted(podnet.Default, net.ParseIP(marker(0))); err != nil {
		return nil, err
	}
	if slice, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return nil, err
	}

	// The baseline: client-go's own delivery.
	var mu sync.Mutex
	informerSaw := map[string]time.Time{}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	record := func(obj any) {
		now := time.Now()
		if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
			mu.Lock()
			for _, e := range es.Endpoints {
				for _, a := range e.Addresses {
					if _, seen := informerSaw[a]; !seen {
						informerSaw[a] = now
					}
				}
			}
			mu.Unlock()
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: record, UpdateFunc: func(_, n any) { record(n) }})
	stop := make(chan struct{})
	defer close(stop)
	f.Start(stop)
	f.WaitForCacheSync(stop)

	cc, err := client.Dial(fmt.Sprintf("kubernetes:///%s.%s:grpc", svc, ns), client.WithBalancer("kuberpc_bench_probe", ""),
		client.WithRegistry(prometheus.NewRegistry()),
		client.WithDialOptions(grpc.WithResolvers(kuberesolver.NewBuilder(kuberesolver.WithClient(cs)))))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	cc.Connect()
	time.Sleep(500 * time.Millisecond)

	writes := max(s.Calls*3/20, 5) // 300 at the full scale
	var pick, base []float64
	for i := 1; i <= writes; i++ {
		addr := marker(i)
		ch := make(chan time.Time, 1)
		probeSeen.Store(net.JoinHostPort(addr, "50051"), ch)
		slice.Endpoints[0].Addresses = []string{addr}
		start := time.Now()
		if slice, err = cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
		var picked time.Time
		select {
		case picked = <-ch:
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("write %d: the client's balancer never saw %s", i, addr)
		}
		var delivered time.Time
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			t, ok := informerSaw[addr]
			mu.Unlock()
			if ok {
				delivered = t
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("write %d: the informer never delivered %s", i, addr)
			}
		}
		probeSeen.Delete(net.JoinHostPort(addr, "50051"))
		p, b := float64(picked.Sub(start)), float64(delivered.Sub(start))
		pick, base = append(pick, p), append(base, b)
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintln(progress, "convergence: done")
	// One figure per percentile over all the writes, picker ÷ informer
	// at that percentile: there are no rounds, so no spread.
	cas := fmt.Sprintf("EndpointSlice write → client picker ÷ write → informer delivery, %d writes", writes)
	pct := func(v []float64, p float64) float64 {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x)
		}
		return float64(percentile(d, p))
	}
	var rows []Row
	for _, q := range []struct {
		metric string
		p      float64
		goal   string
	}{{"p50 time", 50, "≤ 1.5"}, {"p99 time", 99, ""}, {"max time", 100, ""}} {
		sub, b := pct(pick, q.p), pct(base, q.p)
		rows = append(rows, Row{Pair: "convergence", Case: cas, Metric: q.metric, Subject: sub, Baseline: b,
			Ratio: sub / b, Min: math.NaN(), Max: math.NaN(), Goal: q.goal})
	}
	// Context: grpc-go's DNS resolver re-resolves at most every 30s.
	p50 := rows[0].Subject
	dnsRatio := float64(30*time.Second) / p50
	rows = append(rows, Row{Pair: "convergence", Case: "grpc-go DNS resolver's minimum re-resolution interval ÷ kuberpc's p50", Metric: "p50 time",
		Subject: float64(30 * time.Second), Baseline: p50, Ratio: dnsRatio, Min: math.NaN(), Max: math.NaN()})
	return rows, nil
}
