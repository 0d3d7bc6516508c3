package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/manifests"
	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

func demoCmd(g *globals) *cobra.Command {
	var replicas, requests int
	var policy, src string
	c := &cobra.Command{
		Use:   "demo",
		Short: "The whole path on the local cluster: cluster up, image build, deploy, balanced load, scale-up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Everything the flags can get wrong is refused before the
			// cluster starts.
			if replicas < 1 || replicas > 20 || requests < 1 || requests > 1_000_000 {
				return usagef("--replicas must be 1-20 and --requests 1-1000000")
			}
			if !slices.Contains(demoPolicies, policy) {
				return usagef("--balancer %q: want one of %s", policy, strings.Join(demoPolicies, ", "))
			}
			source, err := exampleServerSource(src)
			if err != nil {
				return err
			}
			defer source.cleanup()
			return demo(cmd.Context(), g, replicas, requests, policy, source)
		},
	}
	c.Flags().IntVar(&replicas, "replicas", 3, "replicas to start with (one more is added to show scale-up)")
	c.Flags().IntVar(&requests, "requests", 3000, "SayHello calls per round")
	c.Flags().StringVar(&policy, "balancer", "round_robin", "load-balancing policy: "+strings.Join(demoPolicies, ", "))
	c.Flags().StringVar(&src, "kuberpc-src", "", "a kuberpc checkout to build the example server from, for developing kuberpc itself (env KUBERPC_SRC; default: the checkout the working directory is in, else the library version this binary was built with)")
	return c
}

// demoPolicies are the load-balancing policies the demo's client can use.
var demoPolicies = []string{"round_robin", "p2c_ewma", "least_request", "random", "weighted_round_robin"}

// stepper prints the demo's steps, each with the time the previous one
// took.
type stepper struct {
	out         io.Writer
	start, last time.Time
	open        bool
}

func (s *stepper) step(format string, args ...any) {
	s.done()
	fmt.Fprintf(s.out, "\n==> "+format+"\n", args...)
	s.last, s.open = time.Now(), true
}

func (s *stepper) done() {
	if s.open {
		fmt.Fprintf(s.out, "    (%s)\n", time.Since(s.last).Round(100*time.Millisecond))
	}
	s.open = false
}

func demo(ctx context.Context, g *globals, replicas, requests int, policy string, src serverSource) error {
	out := g.out
	st := &stepper{out: out, start: time.Now()}
	step := func(_ io.Writer, format string, args ...any) { st.step(format, args...) }
	step(out, "starting the local cluster (etcd, kube-apiserver, controller-manager, scheduler, node agent)")
	lc, err := cluster.Up(ctx, clusterOptions(g))
	if err != nil {
		return err
	}
	g.kubeconfig = lc.Kubeconfig
	step(out, "building the example server as image kuberpc.local/example:v1")
	if _, err := buildImage(g, "kuberpc.local/example:v1", src.dir, src.pkg, src.env...); err != nil {
		return err
	}
	app := demoApp(replicas, policy)
	if err := app.Validate(); err != nil {
		return err
	}
	step(out, "deploying %d replicas (kuberpc manifests: Deployment with gRPC probes, Services, PDB, NetworkPolicy, RBAC)", replicas)
	cs, dyn, _, err := g.clients()
	if err != nil {
		return err
	}
	if err := apply(ctx, dyn, manifests.Objects(app), false, out); err != nil {
		return err
	}
	if err := waitRollout(ctx, cs, app.Namespace, app.Name, 3*time.Minute, out); err != nil {
		return err
	}
	if err := (&statusView{cs: cs, ns: app.Namespace, name: app.Name}).print(ctx, out, "", false); err != nil {
		return err
	}

	target := "kubernetes:///example.default:grpc"
	step(out, "calling %s with balancer %s (the resolver watches EndpointSlices)", target, policy)
	cc, err := client.Dial(target, client.WithBalancer(policy, ""), client.WithRegistry(prometheus.NewRegistry()),
		client.WithIdempotentMethods("example.ExampleService/SayHello"),
		client.WithDialOptions(grpc.WithResolvers(kuberesolver.NewBuilder(kuberesolver.WithKubeconfig(lc.Kubeconfig)))))
	if err != nil {
		return err
	}
	defer cc.Close()
	c := example.NewExampleServiceClient(cc)
	if err := demoLoad(ctx, c, requests, out); err != nil {
		return err
	}

	step(out, "scaling to %d replicas; the new pod takes traffic as soon as its endpoint is ready", replicas+1)
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas+1)
	if _, err := cs.AppsV1().Deployments(app.Namespace).Patch(ctx, app.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return err
	}
	if err := waitRollout(ctx, cs, app.Namespace, app.Name, 3*time.Minute, out); err != nil {
		return err
	}
	if err := demoLoad(ctx, c, requests, out); err != nil {
		return err
	}
	st.done()
	self := selfPath()
	fmt.Fprintf(out, "\n==> done in %s; the cluster keeps running. Next:\n", time.Since(st.start).Round(time.Second))
	fmt.Fprintf(out, "  %s status example --watch      # pods, readiness, endpoints\n", self)
	fmt.Fprintf(out, "  %s call example.ExampleService/SayHello -d '{\"name\":\"you\"}'\n", self)
	fmt.Fprintf(out, "  %s new greeter --proto greeter.proto   # your own service\n", self)
	fmt.Fprintf(out, "  kubectl --context kuberpc get pods,endpointslices\n")
	fmt.Fprintf(out, "  %s cluster down                 # stop it all\n", self)
	return nil
}

func ptrTo[T any](v T) *T { return &v }

// demoApp is the example service the demo deploys for a client balancing
// with policy. weighted_round_robin weighs replicas by the ORCA reports
// in their responses, which a server sends only with ORCA_PER_CALL (they
// cost every call a report): without them it would weigh every replica
// alike, round robin under another name.
func demoApp(replicas int, policy string) manifests.App {
	app := manifests.App{
		Name: "example", Namespace: "default", Image: "kuberpc.local/example:v1", Replicas: ptrTo(int32(replicas)),
		Drain: manifests.Drain{PropagationDelay: "2s", Timeout: "10s"},
	}
	if policy == "weighted_round_robin" {
		app.Env = map[string]string{"ORCA_PER_CALL": "true"}
	}
	return app.Defaults()
}

// demoLoad makes n SayHello calls from 8 goroutines and prints how many
// each pod answered.
func demoLoad(ctx context.Context, c example.ExampleServiceClient, n int, out io.Writer) error {
	var mu sync.Mutex
	counts := map[string]int{}
	failed := 0
	var wg sync.WaitGroup
	start := time.Now()
	const conc = 8
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += conc {
				var p peer.Peer
				_, err := c.SayHello(ctx, &example.Request{Id: int32(i), Name: "demo"}, grpc.Peer(&p))
				mu.Lock()
				if err != nil {
					failed++
				} else {
					host, _, _ := net.SplitHostPort(p.Addr.String())
					counts[host]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	pods := make([]string, 0, len(counts))
	for k := range counts {
		pods = append(pods, k)
	}
	sort.Strings(pods)
	fmt.Fprintf(out, "%d calls in %v (%.0f/s), %d failed\n%-16s %7s %7s\n", n, el.Round(time.Millisecond), float64(n)/el.Seconds(), failed, "POD IP", "CALLS", "SHARE")
	for _, p := range pods {
		fmt.Fprintf(out, "%-16s %7d %6.1f%%\n", p, counts[p], 100*float64(counts[p])/float64(n))
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d calls failed", failed, n)
	}
	return nil
}

// serverSource is where the demo builds the example server from: module
// directory, package, the go command's extra environment, and what to
// remove afterwards.
type serverSource struct {
	dir, pkg string
	env      []string
	cleanup  func()
}

// exampleServerSource returns where to build the reference example server:
// the kuberpc checkout when there is one (dir, $KUBERPC_SRC, or the
// working directory's), else a throwaway module that requires the library
// version this binary was built with, so that an installed CLI needs no
// checkout.
func exampleServerSource(dir string) (serverSource, error) {
	const server = libraryModule + "/examples/example/server"
	src, err := checkout(dir)
	if err != nil {
		return serverSource{}, err
	}
	if src == "" {
		src = findCheckout(".")
	}
	if src != "" {
		return serverSource{dir: src, pkg: server, cleanup: func() {}}, nil
	}
	version, err := libraryVersion()
	if err != nil {
		return serverSource{}, err
	}
	tmp, err := os.MkdirTemp("", "kuberpc-example-")
	if err != nil {
		return serverSource{}, err
	}
	gomod := fmt.Sprintf("module kuberpc-example-build\n\ngo 1.26\n\nrequire %s %s\n", libraryModule, version)
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), []byte(gomod), 0o644); err != nil {
		os.RemoveAll(tmp)
		return serverSource{}, err
	}
	// The throwaway module has no go.sum: let go resolve and record it.
	return serverSource{dir: tmp, pkg: server, env: []string{"GOFLAGS=-mod=mod", "GOWORK=off"}, cleanup: func() { os.RemoveAll(tmp) }}, nil
}

// selfPath is how the user can run this executable again: relative to the
// working directory when it is below it (bin/kuberpc), else its name when
// that is on PATH, else its absolute path.
func selfPath() string {
	exe, err := os.Executable()
	if err != nil {
		return "kuberpc"
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, exe); err == nil && !strings.HasPrefix(rel, "..") {
			return "./" + rel
		}
	}
	if p, err := exec.LookPath(filepath.Base(exe)); err == nil && p == exe {
		return filepath.Base(exe)
	}
	return exe
}
