package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/examples/example/exampletest"
	"github.com/kuberpc/kuberpc/loadgen"
	"github.com/kuberpc/kuberpc/manifests"
)

// deployLang deploys lang's reference server (image) as its own
// Deployment, example-<lang>, under the example Service: kuberpc's
// manifests for it, its pods labelled kuberpc.dev/lang=<lang>.
func deployLang(t *testing.T, ns, lang, image string, replicas int) {
	t.Helper()
	app, err := manifests.Parse([]byte(fmt.Sprintf("name: example\nnamespace: %s\nimage: %s\nreplicas: %d\n%s", ns, image, replicas, langAppRest)))
	if err != nil {
		t.Fatal(err)
	}
	var d *appsv1.Deployment
	for _, o := range manifests.Objects(app) {
		if dep, ok := o.(*appsv1.Deployment); ok {
			d = dep
		}
	}
	d.Name = "example-" + lang
	d.Spec.Selector.MatchLabels["kuberpc.dev/lang"] = lang
	d.Spec.Template.Labels["kuberpc.dev/lang"] = lang
	y, err := manifests.YAML([]manifests.Object{d})
	if err != nil {
		t.Fatal(err)
	}
	env.Kubectl(t, ns, string(y), "apply", "-f", "-")
}

var foreignLangs = []string{"python", "cpp", "java"}

// langAppRest is the kuberpc.yaml every replica of the mixed Service
// shares: short drain settings, per-call ORCA reports (for
// weighted_round_robin).
const langAppRest = "drain: {propagationDelay: 1s, timeout: 5s}\nenv: {ORCA_PER_CALL: \"true\"}\n"

// langOf is the language of a pod of the mixed Service.
func langOf(p corev1.Pod) string {
	if l := p.Labels["kuberpc.dev/lang"]; l != "" {
		return l
	}
	return "go"
}

// TestFourLanguagesBehindOneService: one Service in front of a Go, a
// Python, a C++ and a Java replica, each deployed with kuberpc's
// manifests (gRPC readiness, HTTP liveness on the metrics port, grace
// from the drain settings). kuberpc's client spreads SayHello evenly over
// all four (round robin, counted by each pod's own metrics, so every
// language's /metrics is read); each language's client calls the
// Service's ClusterIP; p2c_ewma, least_request, random and
// weighted_round_robin (on every language's per-call ORCA reports) serve
// the mix with no failed call and every replica used; the Go client
// streams to each language's server;
// deleting each foreign pod under load, then rolling all three foreign
// Deployments at once, fails no call of kuberpc's client.
func TestFourLanguagesBehindOneService(t *testing.T) {
	ns := env.Namespace(t)
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\nreplicas: 1\n"+langAppRest))
	for _, lang := range foreignLangs {
		deployLang(t, ns, lang, "kuberpc.local/example-"+lang+":v1", 1)
	}
	pods := env.WaitReady(t, ns, exampleSelector, 4)
	byLang := map[string]corev1.Pod{}
	for _, p := range pods {
		byLang[langOf(p)] = p
	}
	if len(byLang) != 4 {
		t.Fatalf("pods behind the Service by language: %v; want one each of go, python, cpp, java", byLang)
	}

	// Balance: round robin over the four, from each pod's own counts.
	cc := dial(t, ns)
	ctx := context.Background()
	c := example.NewExampleServiceClient(cc)
	if _, err := c.SayHello(ctx, &example.Request{Name: "warm"}); err != nil {
		t.Fatal(err)
	}
	// Wait until the client has all four connected, so that the shares
	// measure the policy, not connection set-up.
	time.Sleep(2 * time.Second)
	before := podCounts(t, pods)
	const calls = 800
	for i := range calls {
		if _, err := c.SayHello(ctx, &example.Request{Id: int32(i), Name: "rr"}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	after := podCounts(t, pods)
	for i, p := range pods {
		n := after[i] - before[i]
		lang := langOf(p)
		t.Logf("%-6s pod %s: %.0f of %d calls (%.1f%%)", lang, p.Name, n, calls, 100*n/calls)
		if even := float64(calls) / 4; n < 0.85*even || n > 1.15*even {
			t.Errorf("pod %s (%s) got %.0f of %d calls; want within 15%% of %.0f", p.Name, lang, n, calls, even)
		}
	}

	// Every other policy works unchanged over the mix: no call fails and
	// every replica serves.
	for _, policy := range []string{"p2c_ewma", "least_request", "random", "weighted_round_robin"} {
		pc := example.NewExampleServiceClient(dial(t, ns, client.WithBalancer(policy, "")))
		before := podCounts(t, pods)
		for i := range 400 {
			if _, err := pc.SayHello(ctx, &example.Request{Id: int32(i), Name: policy}); err != nil {
				t.Fatalf("%s, call %d: %v", policy, i, err)
			}
		}
		after := podCounts(t, pods)
		var shares []string
		for i, p := range pods {
			n := after[i] - before[i]
			shares = append(shares, fmt.Sprintf("%s %.0f", langOf(p), n))
			if n == 0 {
				t.Errorf("%s: pod %s (%s) got none of 400 calls", policy, p.Name, langOf(p))
			}
		}
		t.Logf("%s: %s", policy, strings.Join(shares, ", "))
	}

	// Each language's client calls the Service (its ClusterIP, through
	// kube-proxy).
	svc, err := env.Client.CoreV1().Services(ns).Get(ctx, "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := net.JoinHostPort(svc.Spec.ClusterIP, "50051")
	for _, lang := range foreignLangs {
		progs, err := exampletest.Build(ctx, lang)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(progs.Client[0], append(progs.Client[1:], clusterIP, lang+"-client")...).CombinedOutput()
		if err != nil || string(out) != "Hello, "+lang+"-client!\n" {
			t.Errorf("the %s client through the Service: %v, %q; want Hello, %s-client!", lang, err, out, lang)
		}
	}

	// Server streaming and bidi from the Go client to each language.
	for lang, p := range byLang {
		sc := example.NewStreamServiceClient(plainConn(t, net.JoinHostPort(p.Status.PodIP, "50051"), ""))
		gs, err := sc.Greetings(ctx, &example.Request{Id: 2, Name: lang})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			r, err := gs.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Greetings from %s: %v", lang, err)
			}
			got = append(got, r.GetMessage())
		}
		if want := fmt.Sprintf("Hello, %s! (1/2)|Hello, %s! (2/2)", lang, lang); strings.Join(got, "|") != want {
			t.Errorf("Greetings from %s = %q, want %q", lang, got, want)
		}
		chat, err := sc.Chat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := chat.Send(&example.Request{Name: "bidi-" + lang}); err != nil {
			t.Fatal(err)
		}
		if r, err := chat.Recv(); err != nil || r.GetMessage() != "Hello, bidi-"+lang+"!" {
			t.Errorf("Chat with %s = %q, %v", lang, r.GetMessage(), err)
		}
		chat.CloseSend()
	}

	// Drains under load: each foreign pod deleted in turn, then the three
	// foreign Deployments rolled at once.
	clients := []loadClient{{name: "kuberpc (kubernetes:///, round_robin)", cc: cc, mustNotFail: true}}
	rate, _ := faultLoad()
	run := underLoadWith(t, clients, loadgen.Options{Rate: rate}, func(mark func(string)) {
		for _, lang := range foreignLangs {
			mark("delete the " + lang + " pod")
			env.Kubectl(t, ns, "", "delete", "pod", byLang[lang].Name, "--wait=false")
			env.WaitReady(t, ns, "kuberpc.dev/lang="+lang, 1)
		}
		mark("rollout restart python, cpp, java")
		start := time.Now()
		for _, lang := range foreignLangs {
			env.Kubectl(t, ns, "", "rollout", "restart", "deployment/example-"+lang)
		}
		for _, lang := range foreignLangs {
			env.Kubectl(t, ns, "", "rollout", "status", "deployment/example-"+lang, "--timeout=180s")
		}
		t.Logf("the three foreign Deployments rolled out in %v", time.Since(start).Round(100*time.Millisecond))
		mark("rolled out")
	})
	report(t, "four languages, each foreign pod deleted, then the three rolled at once", clients, run.results)
}
