package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kuberpc/kuberpc/manifests"
	"github.com/kuberpc/kuberpc/metricsadapter"
)

// FieldManager is the server-side-apply field manager kuberpc writes as.
const FieldManager = "kuberpc"

// kinds are the kinds of object kuberpc applies, in the order deploy
// prunes them.
var kinds = []struct {
	kind    string
	gvr     schema.GroupVersionResource
	cluster bool // cluster-scoped
}{
	{"HorizontalPodAutoscaler", schema.GroupVersionResource{Group: "autoscaling", Version: "v2", Resource: "horizontalpodautoscalers"}, false},
	{"PodDisruptionBudget", schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}, false},
	{"NetworkPolicy", schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}, false},
	{"Deployment", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, false},
	{"Service", schema.GroupVersionResource{Version: "v1", Resource: "services"}, false},
	{"ClusterRoleBinding", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, true},
	{"RoleBinding", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}, false},
	{"Role", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}, false},
	{"ServiceAccount", schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, false},
}

// resourceOf returns the resource of o's kind and whether kuberpc knows it.
func resourceOf(o manifests.Object) (schema.GroupVersionResource, bool) {
	gvk := o.GetObjectKind().GroupVersionKind()
	for _, k := range kinds {
		if k.kind == gvk.Kind && k.gvr.GroupVersion() == gvk.GroupVersion() {
			return k.gvr, true
		}
	}
	return schema.GroupVersionResource{}, false
}

// apply server-side-applies objs; with dryRun the apiserver validates and
// admits them without persisting anything.
func apply(ctx context.Context, dyn dynamic.Interface, objs []manifests.Object, dryRun bool, out io.Writer) error {
	for _, o := range objs {
		gvk := o.GetObjectKind().GroupVersionKind()
		gvr, ok := resourceOf(o)
		if !ok {
			return fmt.Errorf("no resource known for %s", gvk)
		}
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(b); err != nil {
			return err
		}
		opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		r := dyn.Resource(gvr).Namespace(o.GetNamespace())
		patched := false
		if d, ok := o.(*appsv1.Deployment); ok {
			if patched, err = replaceForeignHandlers(ctx, dyn, d, opts.DryRun); err != nil {
				return fmt.Errorf("take back the probes of deployment %s/%s: %w", d.Namespace, d.Name, err)
			}
		}
		if dryRun && patched {
			// The patch was a dry run too, so an apply would still meet
			// the other manager's handler: validate the whole object as
			// a replacement instead, unconditionally (nothing is written,
			// and a resourceVersion would conflict with the controller's
			// next status write).
			if _, err := r.Update(ctx, u, metav1.UpdateOptions{FieldManager: FieldManager, DryRun: opts.DryRun}); err != nil {
				return fmt.Errorf("validate %s %s: %w", gvk.Kind, objectName(o), err)
			}
		} else if _, err := r.Apply(ctx, o.GetName(), u, opts); err != nil {
			if dryRun && roleToCome(ctx, dyn, o, objs) {
				fmt.Fprintf(out, "not validated %s/%s: the apiserver checks a binding against its Role, which this deploy creates\n", gvr.Resource, o.GetName())
				continue
			}
			return fmt.Errorf("apply %s %s: %w", gvk.Kind, objectName(o), err)
		}
		verb := "applied"
		if dryRun {
			verb = "validated (server dry run)"
		}
		fmt.Fprintf(out, "%s %s/%s\n", verb, gvr.Resource, o.GetName())
	}
	return nil
}

// objectName is o's namespace/name, or its name when it is cluster-scoped.
func objectName(o manifests.Object) string {
	if ns := o.GetNamespace(); ns != "" {
		return ns + "/" + o.GetName()
	}
	return o.GetName()
}

// roleToCome reports whether o is a RoleBinding whose Role objs has and
// the cluster does not have yet. The server dry run of such a binding
// fails for a user who may not bind any role (a namespace's admin):
// the apiserver checks that the user holds the role's rules, and there
// is no role yet. The real apply creates the Role first.
func roleToCome(ctx context.Context, dyn dynamic.Interface, o manifests.Object, objs []manifests.Object) bool {
	rb, ok := o.(*rbacv1.RoleBinding)
	if !ok || rb.RoleRef.Kind != "Role" {
		return false
	}
	if !slices.ContainsFunc(objs, func(r manifests.Object) bool {
		_, isRole := r.(*rbacv1.Role)
		return isRole && r.GetNamespace() == rb.Namespace && r.GetName() == rb.RoleRef.Name
	}) {
		return false
	}
	roles := rbacv1.SchemeGroupVersion.WithResource("roles")
	_, err := dyn.Resource(roles).Namespace(rb.Namespace).Get(ctx, rb.RoleRef.Name, metav1.GetOptions{})
	return apierrors.IsNotFound(err)
}

// prune deletes the objects an earlier deploy of app made that objs no
// longer has (an HPA after autoscaling was taken out of kuberpc.yaml, the
// token reviewer's ClusterRoleBinding after security.tokenAudience was):
// left behind, an HPA would go on resizing the Deployment against its
// replicas, and a binding would keep rights nothing uses. See
// deleteApplied for which objects are candidates.
func prune(ctx context.Context, dyn dynamic.Interface, app manifests.App, objs []manifests.Object, dryRun bool, out io.Writer) error {
	keep := map[string]bool{}
	for _, o := range objs {
		keep[objectKey(o.GetObjectKind().GroupVersionKind().Kind, o.GetNamespace(), o.GetName())] = true
	}
	_, err := deleteApplied(ctx, dyn, app, keep, dryRun, "prune", "pruned", " (no longer in the app)", out)
	return err
}

// deleteApplied deletes the objects of app that kuberpc applied, but for
// those keep names (by objectKey), and returns how many. An
// object is app's when it carries app's manifests.ManagedLabels (and,
// cluster scoped, its manifests.NamespaceLabel) and kuberpc applied it,
// as its managed fields say; nothing else is touched. Kinds the user may
// not list are skipped, with a line saying so. With dryRun the apiserver
// only says what it would delete. verb and done name the action in errors
// and in the lines printed, followed by why.
func deleteApplied(ctx context.Context, dyn dynamic.Interface, app manifests.App, keep map[string]bool, dryRun bool, verb, done, why string, out io.Writer) (int, error) {
	opts := metav1.DeleteOptions{PropagationPolicy: ptrTo(metav1.DeletePropagationBackground)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
		done += " (server dry run)"
	}
	n := 0
	for _, k := range kinds {
		sel := manifests.ManagedLabels(app)
		var r dynamic.ResourceInterface = dyn.Resource(k.gvr).Namespace(app.Namespace)
		if k.cluster {
			sel[manifests.NamespaceLabel] = app.Namespace
			r = dyn.Resource(k.gvr)
		}
		list, err := r.List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
		if apierrors.IsForbidden(err) {
			// A namespace's admin may not list cluster-scoped objects;
			// the deploy itself does not need to.
			fmt.Fprintf(out, "not %s: %s (this user may not list them)\n", done, k.gvr.Resource)
			continue
		}
		if err != nil {
			return n, fmt.Errorf("list %s to %s: %w", k.gvr.Resource, verb, err)
		}
		for _, u := range list.Items {
			if keep[objectKey(k.kind, u.GetNamespace(), u.GetName())] || !appliedByKuberpc(&u) {
				continue
			}
			opts.Preconditions = &metav1.Preconditions{UID: ptrTo(u.GetUID())}
			if err := r.Delete(ctx, u.GetName(), opts); err != nil && !apierrors.IsNotFound(err) {
				return n, fmt.Errorf("%s %s %s: %w", verb, k.kind, u.GetName(), err)
			}
			n++
			fmt.Fprintf(out, "%s %s/%s%s\n", done, k.gvr.Resource, u.GetName(), why)
		}
	}
	return n, nil
}

// objectKey names an object in deleteApplied's keep set.
func objectKey(kind, namespace, name string) string {
	return kind + " " + namespace + "/" + name
}

// appliedByKuberpc reports whether kuberpc's field manager applied u.
func appliedByKuberpc(u *unstructured.Unstructured) bool {
	for _, f := range u.GetManagedFields() {
		if f.Manager == FieldManager && f.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

// waitRollout prints the rollout's progress until every replica runs the
// current template and is available, or timeout passes.
func waitRollout(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("deployment %s/%s: %w", ns, name, err)
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		st := d.Status
		line := fmt.Sprintf("rollout %s: %d/%d updated, %d/%d ready, %d available", name, st.UpdatedReplicas, want, st.ReadyReplicas, want, st.AvailableReplicas)
		if line != last {
			fmt.Fprintln(out, line)
			last = line
		}
		if st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rollout of %s/%s not done after %v: %s (see `kuberpc status %s -n %s`)", ns, name, timeout, line, name, ns)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func deployCmd(g *globals) *cobra.Command {
	var file, dryRun string
	var timeout time.Duration
	c := &cobra.Command{
		Use: "deploy", Short: "Server-side apply kuberpc.yaml's objects, prune those it no longer has, and wait for the rollout", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch dryRun {
			case "none", "client", "server":
			default:
				return usagef("--dry-run=%q: want none, client or server", dryRun)
			}
			if timeout <= 0 {
				return usagef("--timeout=%v: want a positive duration", timeout)
			}
			app, err := g.loadApp(file)
			if err != nil {
				return err
			}
			objs := manifests.Objects(app)
			if dryRun == "client" {
				y, err := manifests.YAML(objs)
				if err != nil {
					return err
				}
				fmt.Fprint(g.out, string(y))
				return nil
			}
			cs, dyn, _, err := g.clients()
			if err != nil {
				return err
			}
			// Validate everything with the apiserver before changing
			// anything; with --dry-run=server that is all, and said.
			onlyValidate := dryRun == "server"
			validated := io.Discard
			if onlyValidate {
				validated = g.out
			}
			if err := apply(cmd.Context(), dyn, objs, true, validated); err != nil {
				return err
			}
			if !onlyValidate {
				if err := apply(cmd.Context(), dyn, objs, false, g.out); err != nil {
					return err
				}
			}
			if err := prune(cmd.Context(), dyn, app, objs, onlyValidate, g.out); err != nil {
				return err
			}
			if onlyValidate {
				return nil
			}
			if err := waitRollout(cmd.Context(), cs, app.Namespace, app.Name, timeout, g.out); err != nil {
				return err
			}
			return (&statusView{cs: cs, ns: app.Namespace, name: app.Name}).print(cmd.Context(), g.out, "", false)
		},
	}
	c.Flags().StringVarP(&file, "filename", "f", "kuberpc.yaml", "the app description")
	c.Flags().StringVar(&dryRun, "dry-run", "none", "none, client (print objects) or server (validate with the apiserver)")
	c.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for the rollout")
	return c
}

// statusView prints a service's pods; it keeps each pod's last metrics
// sample so that the next print shows rates.
type statusView struct {
	cs   kubernetes.Interface
	ns   string
	name string
	last map[string]metricsadapter.Sample // by pod UID
}

// selector selects the service's pods.
func (v *statusView) selector() string {
	return labels.SelectorFromSet(map[string]string{"app.kubernetes.io/name": v.name}).String()
}

// exists returns an error naming the service when the namespace has
// neither its Deployment nor a pod of it: a misspelt name would
// otherwise print an empty table.
func (v *statusView) exists(ctx context.Context) error {
	_, err := v.cs.AppsV1().Deployments(v.ns).Get(ctx, v.name, metav1.GetOptions{})
	if err == nil || (!apierrors.IsNotFound(err) && !apierrors.IsForbidden(err)) {
		return err // a user who may not read Deployments may still list pods
	}
	sel := v.selector()
	pods, err := v.cs.CoreV1().Pods(v.ns).List(ctx, metav1.ListOptions{LabelSelector: sel, Limit: 1})
	if err != nil || len(pods.Items) > 0 {
		return err
	}
	return fmt.Errorf("no service %q in namespace %s: no Deployment of that name, no pod labelled %s", v.name, v.ns, sel)
}

// podStatus is one pod of kuberpc status, a row of its table and an
// element of its -o json and -o yaml output.
type podStatus struct {
	Pod string `json:"pod"`
	// Version is the tag (or digest) of the first container's image.
	Version         string `json:"version"`
	ReadyContainers int    `json:"readyContainers"`
	Containers      int    `json:"containers"`
	// Status is the pod's phase, a waiting container's reason, or
	// Terminating while it drains.
	Status   string `json:"status"`
	Restarts int32  `json:"restarts"`
	IP       string `json:"ip"`
	// Endpoint holds the conditions of the pod's address in the Service's
	// EndpointSlices; nil when no slice has it.
	Endpoint *discoveryv1.EndpointConditions `json:"endpoint"`
	// Calls are the rates of the pod's application calls since the
	// previous read; nil on the first read, or when the pod's metrics
	// did not answer (ScrapeError says why).
	Calls       *callRates `json:"calls"`
	ScrapeError string     `json:"scrapeError,omitempty"`
}

// callRates are a pod's calls between two reads of its metrics.
type callRates struct {
	PerSecond float64 `json:"perSecond"`
	// P99Seconds is the upper bound of the latency bucket that holds the
	// 99th percentile; nil when no call ended, or when it is past the
	// largest bucket (P99OverMax).
	P99Seconds  *float64 `json:"p99Seconds"`
	P99OverMax  bool     `json:"p99OverMax,omitempty"`
	FailedRatio float64  `json:"failedRatio"`
}

// statusReport is what kuberpc status -o json and -o yaml print.
type statusReport struct {
	Service   string      `json:"service"`
	Namespace string      `json:"namespace"`
	Pods      []podStatus `json:"pods"`
}

// read returns the service's pods, sorted by name: per pod its version,
// readiness, status, restarts, endpoint conditions, and, from its
// metrics endpoint, its calls since the previous read.
func (v *statusView) read(ctx context.Context) ([]podStatus, error) {
	sel := v.selector()
	pods, err := v.cs.CoreV1().Pods(v.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	slices, err := v.cs.DiscoveryV1().EndpointSlices(v.ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + v.name})
	if err != nil {
		return nil, err
	}
	conds := map[string]discoveryv1.EndpointConditions{}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				conds[a] = e.Conditions
			}
		}
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	// Scrape every pod at once: one slow pod must not stall the table.
	samples := make([]metricsadapter.Sample, len(pods.Items))
	errs := make([]error, len(pods.Items))
	var wg sync.WaitGroup
	for i := range pods.Items {
		if pods.Items[i].Status.PodIP == "" {
			errs[i] = errNoIP
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			samples[i], errs[i] = scrapePod(ctx, v.cs, &pods.Items[i])
		}()
	}
	wg.Wait()
	last := map[string]metricsadapter.Sample{}
	rows := make([]podStatus, len(pods.Items))
	for i, p := range pods.Items {
		r := podStatus{Pod: p.Name, Version: "-", Containers: len(p.Spec.Containers), Status: string(p.Status.Phase), IP: p.Status.PodIP}
		for _, c := range p.Status.ContainerStatuses {
			if c.Ready {
				r.ReadyContainers++
			}
			r.Restarts += c.RestartCount
			if c.State.Waiting != nil && c.State.Waiting.Reason != "" {
				r.Status = c.State.Waiting.Reason
			}
		}
		if p.DeletionTimestamp != nil {
			r.Status = "Terminating"
		}
		if c, ok := conds[p.Status.PodIP]; ok {
			r.Endpoint = &c
		}
		if len(p.Spec.Containers) > 0 {
			img := p.Spec.Containers[0].Image
			if i := strings.LastIndexAny(img, ":@"); i >= 0 && !strings.Contains(img[i:], "/") {
				r.Version = img[i+1:]
			}
		}
		switch {
		case errs[i] == nil:
			last[string(p.UID)] = samples[i]
			if prev, ok := v.last[string(p.UID)]; ok {
				if rt, ok := rates(prev, samples[i]); ok {
					r.Calls = &callRates{PerSecond: rt.rps, FailedRatio: rt.failedShare, P99OverMax: math.IsInf(rt.p99, 1)}
					if !math.IsNaN(rt.p99) && !math.IsInf(rt.p99, 0) {
						r.Calls.P99Seconds = &rt.p99
					}
				}
			}
		case !errors.Is(errs[i], errNoIP):
			r.ScrapeError = errs[i].Error()
		}
		rows[i] = r
	}
	v.last = last
	return rows, nil
}

// print reads the pods and writes them to out: as a table, or as a
// statusReport in output (json or yaml); with lines, one JSON document
// a line (a stream of them, for --watch).
func (v *statusView) print(ctx context.Context, out io.Writer, output string, lines bool) error {
	rows, err := v.read(ctx)
	if err != nil {
		return err
	}
	switch output {
	case "json", "yaml":
		rep := statusReport{Service: v.name, Namespace: v.ns, Pods: rows}
		if rep.Pods == nil {
			rep.Pods = []podStatus{}
		}
		var b []byte
		switch {
		case output == "yaml":
			b, err = yaml.Marshal(rep)
			if lines {
				b = append([]byte("---\n"), b...)
			}
		case lines:
			b, err = json.Marshal(rep)
			b = append(b, '\n')
		default:
			b, err = json.MarshalIndent(rep, "", "  ")
			b = append(b, '\n')
		}
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		return err
	}
	fmt.Fprintf(out, "%-36s %-8s %-7s %-18s %-8s %-14s %-24s %8s %9s %6s\n", "POD", "VERSION", "READY", "STATUS", "RESTARTS", "IP", "ENDPOINT", "RPS", "P99", "ERR%")
	for _, r := range rows {
		ep := "-"
		if c := r.Endpoint; c != nil {
			ep = fmt.Sprintf("ready=%s serving=%s term=%s", b(c.Ready), b(c.Serving), b(c.Terminating))
		}
		rps, p99, errPct := "-", "-", "-"
		if c := r.Calls; c != nil {
			switch {
			case c.P99OverMax:
				p99 = formatLatency(math.Inf(1))
			case c.P99Seconds != nil:
				p99 = formatLatency(*c.P99Seconds)
			}
			rps, errPct = fmt.Sprintf("%.1f", c.PerSecond), fmt.Sprintf("%.1f", 100*c.FailedRatio)
		} else if r.ScrapeError != "" {
			rps = "?" // the pod did not answer; its process may be gone
		}
		fmt.Fprintf(out, "%-36s %-8s %-7s %-18s %-8d %-14s %-24s %8s %9s %6s\n", r.Pod, r.Version, strconv.Itoa(r.ReadyContainers)+"/"+strconv.Itoa(r.Containers),
			r.Status, r.Restarts, r.IP, ep, rps, p99, errPct)
	}
	return nil
}

var errNoIP = errors.New("no pod IP yet")

func b(v *bool) string {
	if v == nil {
		return "?"
	}
	if *v {
		return "T"
	}
	return "F"
}

func statusCmd(g *globals) *cobra.Command {
	var watch bool
	var interval time.Duration
	var output string
	c := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a service's pods: version, readiness, endpoints, RPS, p99 and errors",
		Long: `Show a service's pods: version, readiness and endpoint conditions from the
apiserver, and calls per second, p99 latency and failed share read from each
pod's metrics endpoint (through the apiserver's pod proxy) between two reads.
With --watch the table is redrawn in place every --interval (appended as
plain tables when the output is not a terminal), to follow a rollout.
-o json and -o yaml print the same as a document (with --watch, a JSON
document a line, or YAML documents separated by ---), for scripts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return usagef("--interval=%v: want a positive duration", interval)
			}
			if output != "" && output != "json" && output != "yaml" {
				return usagef("--output %q: want json or yaml (or none, for the table)", output)
			}
			cs, _, ns, err := g.clients()
			if err != nil {
				return err
			}
			v := &statusView{cs: cs, ns: ns, name: args[0]}
			if err := v.exists(cmd.Context()); err != nil {
				return err
			}
			if !watch {
				// One read, with rates over a short first interval.
				if _, err := v.read(cmd.Context()); err != nil {
					return err
				}
				time.Sleep(min(interval, time.Second))
				return v.print(cmd.Context(), g.out, output, false)
			}
			tty := output == "" && isTerminal(g.out)
			for {
				var buf bytes.Buffer
				if tty {
					buf.WriteString("\x1b[H\x1b[2J") // home, clear: redraw in place
				}
				if output == "" {
					fmt.Fprintf(&buf, "%s  %s/%s  every %v\n", time.Now().Format("15:04:05"), ns, args[0], interval)
				}
				if err := v.print(cmd.Context(), &buf, output, true); err != nil {
					return err
				}
				if output == "" && !tty {
					buf.WriteString("\n")
				}
				g.out.Write(buf.Bytes())
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	c.Flags().BoolVarP(&watch, "watch", "w", false, "redraw until interrupted, to follow a rollout")
	c.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between reads (rates are over it)")
	c.Flags().StringVarP(&output, "output", "o", "", "json or yaml (default: a table)")
	return c
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func rollbackCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use: "rollback NAME", Short: "Roll a service back to its previous revision and wait", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout=%v: want a positive duration", timeout)
			}
			cs, _, ns, err := g.clients()
			if err != nil {
				return err
			}
			if err := rollback(cmd.Context(), cs, ns, args[0], g.out); err != nil {
				return err
			}
			return waitRollout(cmd.Context(), cs, ns, args[0], timeout, g.out)
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for the rollout")
	return c
}

func deleteCmd(g *globals) *cobra.Command {
	var dryRun string
	c := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete what kuberpc deploy made for a service, its cluster-scoped objects included",
		Long: "Delete what kuberpc deploy made for the service NAME in the namespace: the objects carrying its\n" +
			"labels that kuberpc applied, its ClusterRoleBinding included, which deleting the namespace\n" +
			"would leave behind. Objects kuberpc did not apply are left alone.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch dryRun {
			case "none", "server":
			default:
				return usagef("--dry-run=%q: want none or server", dryRun)
			}
			if errs := validation.IsDNS1123Label(args[0]); len(errs) > 0 {
				return usagef("service name %q: %s", args[0], strings.Join(errs, "; "))
			}
			_, dyn, ns, err := g.clients()
			if err != nil {
				return err
			}
			app := manifests.App{Name: args[0], Namespace: ns}
			n, err := deleteApplied(cmd.Context(), dyn, app, nil, dryRun == "server", "delete", "deleted", "", g.out)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("nothing to delete: no object of service %q in namespace %s was applied by kuberpc", app.Name, ns)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dryRun, "dry-run", "none", "none, or server (the apiserver says what it would delete)")
	return c
}

// rollback sets the Deployment's pod template to that of the ReplicaSet
// of the previous revision, as `kubectl rollout undo` does: with a patch
// of the template alone, not an update of the Deployment read, which
// mid-rollout (when a rollback is most wanted) conflicts with the
// deployment controller's writes.
func rollback(ctx context.Context, cs kubernetes.Interface, ns, name string, out io.Writer) error {
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return err
	}
	rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return err
	}
	var owned []appsv1.ReplicaSet
	for _, rs := range rss.Items {
		if metav1.IsControlledBy(&rs, d) {
			owned = append(owned, rs)
		}
	}
	rev := func(rs appsv1.ReplicaSet) int {
		n, _ := strconv.Atoi(rs.Annotations["deployment.kubernetes.io/revision"])
		return n
	}
	sort.Slice(owned, func(i, j int) bool { return rev(owned[i]) > rev(owned[j]) })
	if len(owned) < 2 {
		return fmt.Errorf("deployment %s/%s has no previous revision to roll back to", ns, name)
	}
	prev := owned[1]
	tmpl := prev.Spec.Template.DeepCopy()
	delete(tmpl.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	patch, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/spec/template",
		"value": corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: tmpl.Labels, Annotations: tmpl.Annotations}, Spec: tmpl.Spec}}})
	if err != nil {
		return err
	}
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return err
	}
	fmt.Fprintf(out, "rolling %s back to revision %d\n", name, rev(prev))
	return nil
}
