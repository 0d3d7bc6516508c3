package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rbacapplyv1 "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kuberpc/kuberpc/manifests"
)

// kuberpc runs the CLI binary (built by TestMain) against the local
// cluster, and returns its combined output and exit code.
func kuberpc(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return kuberpcUnder(t, nil, args...)
}

// kuberpcUnder is kuberpc run by the command prefix (ip netns exec NAME).
func kuberpcUnder(t *testing.T, prefix []string, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	argv := slices.Concat(prefix, []string{cliBinary, "--kubeconfig", env.Cluster.Kubeconfig}, args)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "KUBERPC_SRC="+env.Repo)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("run kuberpc: %v", err)
	}
	return out.String(), 0
}

// mustKuberpc runs the CLI like kuberpc and fails the test unless it
// exits 0; it returns the output.
func mustKuberpc(t *testing.T, args ...string) string {
	t.Helper()
	out, code := kuberpc(t, args...)
	if code != 0 {
		t.Fatalf("kuberpc %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func writeApp(t *testing.T, ns, image string) string {
	t.Helper()
	return writeAppReplicas(t, ns, image, 2)
}

// writeAppReplicas is writeApp with n replicas (the HPA's minimum, which
// owns the count).
func writeAppReplicas(t *testing.T, ns, image string, n int) string {
	t.Helper()
	return writeExampleApp(t, ns, "image: "+image+"\nreplicas: "+strconv.Itoa(n)+"\ndrain: {propagationDelay: 1s, timeout: 5s}\n"+
		"autoscaling: {minReplicas: "+strconv.Itoa(n)+", maxReplicas: "+strconv.Itoa(max(n, 4))+"}\ncallers: [{podLabels: {app: frontend}}]\n")
}

// writeExampleApp writes the kuberpc.yaml of the service "example" in ns,
// the rest of it being rest, and returns its path.
func writeExampleApp(t *testing.T, ns, rest string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "kuberpc.yaml")
	if err := os.WriteFile(f, []byte("name: example\nnamespace: "+ns+"\n"+rest), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestManifestsPassServerDryRun has the real apiserver validate and admit
// every generated object.
func TestManifestsPassServerDryRun(t *testing.T) {
	ns := env.Namespace(t)
	app, err := manifests.Load(writeApp(t, ns, "kuberpc.local/example:v1"))
	if err != nil {
		t.Fatal(err)
	}
	y, err := manifests.YAML(manifests.Objects(app))
	if err != nil {
		t.Fatal(err)
	}
	out := env.Kubectl(t, ns, string(y), "apply", "--dry-run=server", "-f", "-")
	for _, kind := range []string{"serviceaccount/example ", "serviceaccount/example-client", "role.rbac.authorization.k8s.io/example-endpoints-reader",
		"rolebinding.rbac.authorization.k8s.io/example-endpoints-reader", "service/example ", "service/example-headless",
		"deployment.apps/example", "poddisruptionbudget.policy/example", "networkpolicy.networking.k8s.io/example",
		"horizontalpodautoscaler.autoscaling/example"} {
		if !strings.Contains(out, kind) {
			t.Errorf("server dry run did not report %q:\n%s", kind, out)
		}
	}
}

// canI lists what a service account may do in ns, one line per rule.
func canI(t *testing.T, ns, sa string) []string {
	t.Helper()
	out := env.Kubectl(t, ns, "", "auth", "can-i", "--list", "--as=system:serviceaccount:"+ns+":"+sa)
	var rules []string
	for _, l := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			rules = append(rules, strings.Join(f, " "))
		}
	}
	slices.Sort(rules)
	return rules
}

// TestClientRBACIsLeastPrivilege compares what the generated client
// ServiceAccount may do with what a bare ServiceAccount may do: the only
// difference must be get/list/watch on endpointslices.
func TestClientRBACIsLeastPrivilege(t *testing.T) {
	ns := env.Namespace(t)
	if out, code := kuberpc(t, "deploy", "-f", writeApp(t, ns, "kuberpc.local/example:v1")); code != 0 {
		t.Fatalf("kuberpc deploy: exit %d\n%s", code, out)
	}
	base := canI(t, ns, "default")
	client := canI(t, ns, "example-client")
	var extra []string
	for _, r := range client {
		if !slices.Contains(base, r) {
			extra = append(extra, r)
		}
	}
	want := []string{"endpointslices.discovery.k8s.io [] [] [get list watch]"}
	if !slices.Equal(extra, want) {
		t.Errorf("example-client may do, beyond a bare service account:\n%s\nwant exactly:\n%s", strings.Join(extra, "\n"), strings.Join(want, "\n"))
	}
	if server := canI(t, ns, "example"); !slices.Equal(server, base) {
		t.Errorf("the server's service account has extra rights: %v", server)
	}
}

// TestDeployUpdateRollback drives the CLI: deploy v1, deploy v2, roll back.
func TestDeployUpdateRollback(t *testing.T) {
	ns := env.Namespace(t)
	image := func() string {
		d, err := env.Client.AppsV1().Deployments(ns).Get(context.Background(), "example", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Spec.Containers[0].Image
	}
	out, code := kuberpc(t, "deploy", "-f", writeApp(t, ns, "kuberpc.local/example:v1"))
	if code != 0 || !strings.Contains(out, "2/2 ready") || !strings.Contains(out, "ready=T serving=T") {
		t.Fatalf("deploy v1: exit %d\n%s", code, out)
	}
	if out, code := kuberpc(t, "deploy", "-f", writeApp(t, ns, "kuberpc.local/example:v2")); code != 0 {
		t.Fatalf("deploy v2: exit %d\n%s", code, out)
	}
	if got := image(); got != "kuberpc.local/example:v2" {
		t.Fatalf("after deploying v2 the Deployment runs %s", got)
	}
	// Rolled back while the Deployment is written meanwhile, as it is
	// mid-rollout, when a rollback is most wanted.
	stop := writeMeanwhile(ns, "example", func(d *appsv1.Deployment) bool {
		return d.Spec.Template.Spec.Containers[0].Image == "kuberpc.local/example:v1"
	})
	out, code = kuberpc(t, "rollback", "example", "-n", ns)
	if writes := stop(); code != 0 || writes < 3 {
		t.Fatalf("rollback, %d other writes meanwhile: exit %d\n%s", writes, code, out)
	}
	if got := image(); got != "kuberpc.local/example:v1" {
		t.Errorf("after rollback the Deployment runs %s, want v1\n%s", got, out)
	}
	for _, p := range env.WaitReady(t, ns, "app.kubernetes.io/name=example", 2) {
		if img := p.Spec.Containers[0].Image; img != "kuberpc.local/example:v1" {
			t.Errorf("pod %s runs %s after rollback", p.Name, img)
		}
	}
	out, _ = kuberpc(t, "status", "example", "-n", ns)
	if strings.Count(out, "Running") != 2 {
		t.Errorf("kuberpc status:\n%s", out)
	}
	// -o json: the same, for scripts; rates once a second read has them.
	out, code = kuberpc(t, "status", "example", "-n", ns, "-o", "json")
	var rep struct {
		Service string
		Pods    []struct {
			Pod, Version, Status string
			ReadyContainers      int
			Endpoint             *struct{ Ready, Serving *bool }
			Calls                *struct{ PerSecond float64 }
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || rep.Service != "example" || len(rep.Pods) != 2 {
		t.Errorf("kuberpc status -o json: exit %d, %v\n%s", code, err, out)
	}
	for _, p := range rep.Pods {
		if p.Version != "v1" || p.Status != "Running" || p.ReadyContainers != 1 || p.Endpoint == nil || p.Endpoint.Ready == nil || !*p.Endpoint.Ready || p.Calls == nil {
			t.Errorf("kuberpc status -o json: pod %+v; want v1, Running, ready, a ready endpoint, call rates", p)
		}
	}
	// An image the pods run is not removed; the error names them.
	out, code = kuberpc(t, "image", "rm", "kuberpc.local/example:v1")
	if code == 0 || !strings.Contains(out, "images in use, nothing removed") || !strings.Contains(out, " "+ns+"/example-") {
		t.Errorf("kuberpc image rm of an image in use: exit %d\n%s", code, out)
	}
	if out := mustKuberpc(t, "image", "list"); !strings.Contains(out, "kuberpc.local/example:v1 ") {
		t.Errorf("after a refused image rm, the image is gone:\n%s", out)
	}
	// A misspelt name is named, not answered with an empty table.
	out, code = kuberpc(t, "status", "exampel", "-n", ns)
	if code == 0 || !strings.Contains(out, `no service "exampel" in namespace `+ns) {
		t.Errorf("kuberpc status of a service that is not there: exit %d\n%s", code, out)
	}
	// kuberpc load: an open loop and streams through the resolver; both
	// replicas answer and nothing fails.
	out, code = kuberpc(t, "load", "--rate", "200", "--duration", "3s", "--streams", "4", "-n", ns)
	if code != 0 || !strings.Contains(out, "unary calls: 600, failed 0") || strings.Count(out, "198.18.") < 2 || !strings.Contains(out, "streams: opened 4") {
		t.Errorf("kuberpc load: exit %d\n%s", code, out)
	}
	// With no --target, call finds the Service serving the method (its
	// name, "example", is not the proto service's).
	out, code = kuberpc(t, "call", "example.ExampleService/SayHello", "-d", `{"name":"e2e"}`, "-n", ns)
	if code != 0 || !strings.Contains(out, `"Hello, e2e!"`) {
		t.Errorf("kuberpc call without --target: exit %d\n%s", code, out)
	}
	// A bidirectional stream, found and balanced the same way.
	out, code = kuberpc(t, "call", "example.StreamService/Chat", "-d", `{"name":"a"} {"name":"b"}`, "-n", ns)
	if code != 0 || !strings.Contains(out, `"Hello, a!"`) || !strings.Contains(out, `"Hello, b!"`) {
		t.Errorf("kuberpc call of a bidirectional stream: exit %d\n%s", code, out)
	}
	out, code = kuberpc(t, "call", "no.Such/Method", "-n", ns)
	if code == 0 || !strings.Contains(out, "no Service in namespace "+ns+" serves no.Such") {
		t.Errorf("kuberpc call of an unserved service: exit %d\n%s", code, out)
	}
}

// TestDeployPrunesWhatTheAppNoLongerHas: autoscaling and a token audience
// taken out of kuberpc.yaml take their HPA and ClusterRoleBinding with
// them on the next deploy (left behind, the HPA went on resizing the
// Deployment, and the binding kept the server's ServiceAccount a right
// nothing used). Objects with the app's labels that kuberpc did not
// apply, and another namespace's binding, stay.
func TestDeployPrunesWhatTheAppNoLongerHas(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	base := "image: kuberpc.local/example:v1\nreplicas: 1\ndrain: {propagationDelay: 1s, timeout: 5s}\n"
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, base+
		"autoscaling: {minReplicas: 1, maxReplicas: 2}\nsecurity: {tokenAudience: example}\n"))
	app := manifests.App{Name: "example", Namespace: ns}
	crb := ns + "-example-tokenreview"
	t.Cleanup(func() { env.Client.RbacV1().ClusterRoleBindings().Delete(ctx, crb, metav1.DeleteOptions{}) })

	// The user's own HPA, with the app's labels, created (not applied by kuberpc).
	mine := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: "example-mine", Labels: manifests.ManagedLabels(app)},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MaxReplicas: 2,
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "other"}}}
	if _, err := env.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, mine, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Another namespace's app of the same name, its binding applied by kuberpc.
	other := "other-" + ns + "-example-tokenreview"
	otherLabels := manifests.ManagedLabels(app)
	otherLabels[manifests.NamespaceLabel] = "other-" + ns
	if _, err := env.Client.RbacV1().ClusterRoleBindings().Apply(ctx, rbacapplyv1.ClusterRoleBinding(other).WithLabels(otherLabels).
		WithRoleRef(rbacapplyv1.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName("system:auth-delegator")),
		metav1.ApplyOptions{FieldManager: "kuberpc", Force: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Client.RbacV1().ClusterRoleBindings().Delete(ctx, other, metav1.DeleteOptions{}) })

	exists := func() map[string]bool {
		got := map[string]bool{}
		for _, name := range []string{"example", "example-mine"} {
			_, err := env.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, name, metav1.GetOptions{})
			got["hpa/"+name] = err == nil
		}
		for _, name := range []string{crb, other} {
			_, err := env.Client.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
			got["crb/"+name] = err == nil
		}
		return got
	}
	all := map[string]bool{"hpa/example": true, "hpa/example-mine": true, "crb/" + crb: true, "crb/" + other: true}
	if got := exists(); !maps.Equal(got, all) {
		t.Fatalf("after deploying with autoscaling and a token audience: %v", got)
	}

	without := writeExampleApp(t, ns, base)
	out := mustKuberpc(t, "deploy", "-f", without, "--dry-run=server")
	for _, want := range []string{"pruned (server dry run) horizontalpodautoscalers/example ", "pruned (server dry run) clusterrolebindings/" + crb + " "} {
		if !strings.Contains(out, want) {
			t.Errorf("kuberpc deploy --dry-run=server without them does not say %q:\n%s", want, out)
		}
	}
	if got := exists(); !maps.Equal(got, all) {
		t.Fatalf("after a server dry run: %v", got)
	}
	out = mustKuberpc(t, "deploy", "-f", without)
	if strings.Count(out, "pruned ") != 2 {
		t.Errorf("kuberpc deploy without them prunes other than the HPA and the binding:\n%s", out)
	}
	want := map[string]bool{"hpa/example": false, "hpa/example-mine": true, "crb/" + crb: false, "crb/" + other: true}
	if got := exists(); !maps.Equal(got, want) {
		t.Errorf("after deploying without autoscaling and a token audience: %v, want %v\n%s", got, want, out)
	}
	d, err := env.Client.AppsV1().Deployments(ns).Get(ctx, "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas after the HPA was pruned: %v, want 1", d.Spec.Replicas)
	}
}

// TestDeployAsNamespaceAdmin: a user who is admin of one namespace only
// (the built-in "admin" ClusterRole bound there, as multi-tenant clusters
// hand out) deploys an app without security. The server dry run of its
// first deploy failed on the RoleBinding, whose Role did not exist yet;
// pruning may not list ClusterRoleBindings and says so; the deploy
// succeeds.
func TestDeployAsNamespaceAdmin(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	serviceAccounts(t, ns, "deployer")
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer-admin"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}}}
	if _, err := env.Client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "deployer", &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(env.Cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		*a = clientcmdapi.AuthInfo{Token: tr.Status.Token}
	}
	kubeconfig := filepath.Join(t.TempDir(), "deployer.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	// An app with a token audience needs a ClusterRoleBinding this user
	// may not make: the server dry run says so, and nothing is changed.
	base := "image: kuberpc.local/example:v1\nreplicas: 1\ndrain: {propagationDelay: 1s, timeout: 5s}\n"
	out, code := kuberpc(t, "--kubeconfig", kubeconfig, "deploy", "-f", writeExampleApp(t, ns, base+"security: {tokenAudience: example}\n"))
	if want := "kuberpc: apply ClusterRoleBinding " + ns + "-example-tokenreview: "; code == 0 || !strings.Contains(out, want) || !strings.Contains(out, `cannot patch resource "clusterrolebindings"`) {
		t.Errorf("kuberpc deploy with a token audience as the namespace's admin: exit %d, want an error starting %q\n%s", code, want, out)
	}
	if sas, err := env.Client.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=example"}); err != nil || len(sas.Items) != 0 {
		t.Errorf("a failed server dry run left ServiceAccounts %v (%v)", sas, err)
	}

	f := writeExampleApp(t, ns, base)
	// The first server dry run cannot validate the binding of a Role
	// that does not exist yet (the apiserver checks the binding against
	// the role's rules); it says so and validates the rest.
	out = mustKuberpc(t, "--kubeconfig", kubeconfig, "deploy", "-f", f, "--dry-run=server")
	if !strings.Contains(out, "not validated rolebindings/example-endpoints-reader: ") || !strings.Contains(out, "validated (server dry run) deployments/example") {
		t.Errorf("kuberpc deploy --dry-run=server as the namespace's admin:\n%s", out)
	}
	out = mustKuberpc(t, "--kubeconfig", kubeconfig, "deploy", "-f", f)
	if !strings.Contains(out, "not pruned: clusterrolebindings (this user may not list them)") || !strings.Contains(out, "1/1 ready") {
		t.Errorf("kuberpc deploy as the namespace's admin:\n%s", out)
	}
}

// TestDeleteRemovesWhatDeployMade: kuberpc delete removes every object
// kuberpc deploy made for the service, its ClusterRoleBinding included —
// which deleting the namespace leaves behind, still granting
// system:auth-delegator to whoever next makes a ServiceAccount of that
// name there — and leaves alone an object with its labels that kuberpc
// did not apply.
func TestDeleteRemovesWhatDeployMade(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	mustKuberpc(t, "deploy", "-f", writeExampleApp(t, ns, "image: kuberpc.local/example:v1\nreplicas: 1\n"+
		"drain: {propagationDelay: 1s, timeout: 5s}\nsecurity: {tokenAudience: example}\n"))
	crb := ns + "-example-tokenreview"
	t.Cleanup(func() { env.Client.RbacV1().ClusterRoleBindings().Delete(ctx, crb, metav1.DeleteOptions{}) })
	mine := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "example-mine", Labels: manifests.ManagedLabels(manifests.App{Name: "example"})}}
	if _, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, mine, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "example-mine", Labels: mine.Labels}}
	if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	left := func() []string {
		var names []string
		sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=example"}
		add := func(kind string, n int, err error) {
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, fmt.Sprintf("%s:%d", kind, n))
		}
		d, err := env.Client.AppsV1().Deployments(ns).List(ctx, sel)
		add("deployments", len(d.Items), err)
		s, err := env.Client.CoreV1().Services(ns).List(ctx, sel)
		add("services", len(s.Items), err)
		a, err := env.Client.CoreV1().ServiceAccounts(ns).List(ctx, sel)
		add("serviceaccounts", len(a.Items), err)
		r, err := env.Client.RbacV1().Roles(ns).List(ctx, sel)
		add("roles", len(r.Items), err)
		rb, err := env.Client.RbacV1().RoleBindings(ns).List(ctx, sel)
		add("rolebindings", len(rb.Items), err)
		p, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).List(ctx, sel)
		add("pdbs", len(p.Items), err)
		np, err := env.Client.NetworkingV1().NetworkPolicies(ns).List(ctx, sel)
		add("networkpolicies", len(np.Items), err)
		_, err = env.Client.RbacV1().ClusterRoleBindings().Get(ctx, crb, metav1.GetOptions{})
		add("tokenreview-binding", map[bool]int{true: 1}[err == nil], nil)
		c, err := env.Client.CoreV1().ConfigMaps(ns).List(ctx, sel)
		add("configmaps", len(c.Items), err)
		return names
	}
	deployed := "deployments:1 services:2 serviceaccounts:3 roles:1 rolebindings:1 pdbs:1 networkpolicies:1 tokenreview-binding:1 configmaps:1"
	if got := strings.Join(left(), " "); got != deployed {
		t.Fatalf("deployed: %s, want %s", got, deployed)
	}
	out := mustKuberpc(t, "delete", "example", "-n", ns, "--dry-run=server")
	if got := strings.Join(left(), " "); got != deployed || !strings.Contains(out, "deleted (server dry run) clusterrolebindings/"+crb) {
		t.Fatalf("after a server dry run: %s\n%s", got, out)
	}
	out = mustKuberpc(t, "delete", "example", "-n", ns)
	// What is left: the user's ServiceAccount and ConfigMap, and nothing
	// else (the Deployment goes once its pods are gone).
	const want = "deployments:0 services:0 serviceaccounts:1 roles:0 rolebindings:0 pdbs:0 networkpolicies:0 tokenreview-binding:0 configmaps:1"
	deadline := time.Now().Add(30 * time.Second)
	for got := strings.Join(left(), " "); got != want; got = strings.Join(left(), " ") {
		if time.Now().After(deadline) {
			t.Fatalf("after kuberpc delete: %s, want %s\n%s", got, want, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, code := kuberpc(t, "delete", "example", "-n", ns); code == 0 || !strings.Contains(out, "nothing to delete") {
		t.Errorf("kuberpc delete again: exit %d\n%s", code, out)
	}
}
