package manifests_test

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kuberpc/kuberpc/manifests"
)

// TestParseRejectsValuesThatBreakPods: each value that would render a pod
// the apiserver rejects, or one that misbehaves, is an error naming the
// field.
func TestParseRejectsValuesThatBreakPods(t *testing.T) {
	const base = "name: greeter\nimage: kuberpc.local/greeter:v1\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"drain overflowing the grace period", "drain: {propagationDelay: 2562047h, timeout: 1s}", "drain.propagationDelay: 2562047h is above the limit of 1h0m0s"},
		{"drain sum too long", "drain: {propagationDelay: 59m, timeout: 59m, preStopSleep: 59m}", "drain: propagationDelay + timeout + preStopSleep + 5s = 2h57m5s"},
		{"negative drain", "drain: {timeout: -1s}", "drain.timeout: \"-1s\" is not a non-negative duration"},
		{"negative memory limit", "resources: {memoryLimit: -1Gi}", "resources.memoryLimit: \"-1Gi\" must be positive"},
		{"zero cpu limit", "resources: {cpuLimit: \"0\"}", "resources.cpuLimit: \"0\" must be positive"},
		{"memory request above limit", "resources: {memoryRequest: 1Gi, memoryLimit: 256Mi}", "resources.memoryRequest: 1Gi is above resources.memoryLimit 256Mi"},
		{"memory limit in thousandths of a byte", "resources: {memoryLimit: 100m, memoryRequest: 50m}", "resources.memoryLimit: 100m is under 4Mi, too little for any server to start (m means thousandths of a byte: did you mean 100Mi?)"},
		{"memory request too small", "resources: {memoryRequest: 1Mi}", "resources.memoryRequest: 1Mi is under 4Mi"},
		{"env shadows MEMORY_LIMIT", "env: {MEMORY_LIMIT: 1Gi}", "env.MEMORY_LIMIT: kuberpc sets MEMORY_LIMIT itself"},
		{"cpu request above limit", "resources: {cpuRequest: \"2\", cpuLimit: 500m}", "resources.cpuRequest: 2 is above resources.cpuLimit 500m"},
		{"invalid priority class", "priorityClassName: High_Priority", "priorityClassName: \"High_Priority\""},
		{"env shadows PORT", "env: {PORT: \"8080\"}", "env.PORT: kuberpc sets PORT itself"},
		{"env shadows DRAIN_DELAY", "env: {DRAIN_DELAY: 1s}", "env.DRAIN_DELAY: kuberpc sets DRAIN_DELAY itself"},
		{"override without a value", "envOverride: [PORT]", "envOverride: \"PORT\" has no value in env"},
		{"two documents", "---\nname: other\nimage: x\n", "2 YAML documents"},
		{"too big", "env: {BIG: \"" + strings.Repeat("x", manifests.MaxFileSize) + "\"}", "above the limit of 1048576"},
		{"unknown probe type", "probes: {type: liveness}", `probes.type: "liveness", want one of kuberpc, grpc, tcp, http, exec, none`},
		{"exec probe without command", "probes: {type: exec}", "probes.command: required for exec probes"},
		{"command on a tcp probe", "probes: {type: tcp, command: [true]}", "probes.command: only for exec probes (type is tcp)"},
		{"relative http path", "probes: {type: http, path: healthz}", `probes.path: "healthz" must start with /`},
		{"probe port out of range", "probes: {type: tcp, port: 70000}", "probes.port: 70000 out of range"},
		{"scale-down stabilization not a duration", "autoscaling: {minReplicas: 1, maxReplicas: 2, scaleDownStabilization: soon}", `autoscaling.scaleDownStabilization: "soon", want whole seconds`},
		{"security rule without callers", "security: {rules: [{methods: [\"*\"]}]}", "security.rules: rules[0]: no callers"},
		{"security rule with a bad method", "security: {rules: [{methods: [SayHello], callers: [\"*\"]}]}", `security.rules: rules[0]: methods: "SayHello"`},
		{"security rule with a bad caller", "security: {rules: [{methods: [\"*\"], callers: [Frontend]}]}", `security.rules: rules[0]: callers: "Frontend"`},
		{"caller namespace that no namespace can have", "callers: [{podLabels: {app: x}, namespace: Shop_NS}]", `callers[0].namespace: "Shop_NS": a lowercase RFC 1123 label`},
		{"rules with no way to identify a caller", "security: {rules: [{methods: [\"*\"], callers: [\"*\"]}]}", "security.rules: no caller can be identified: set mutualTLS: true or a tokenAudience"},
		{"rules over tls with no way to identify a caller", "security: {tls: true, rules: [{methods: [\"*\"], callers: [\"*\"]}]}", "security.rules: no caller can be identified"},
		{"callers declared twice", "callers: [{podLabels: {app: x}}]\nsecurity: {rules: [{methods: [\"*\"], callers: [\"*\"]}]}", "callers: declare callers once"},
		{"grpc probe of a TLS server", "probes: {type: grpc}\nsecurity: {tls: true}", "probes.type: grpc cannot probe a TLS server"},
		{"audience with a comma", "security: {tokenAudience: \"a,b\"}", `security.tokenAudience: "a,b"`},
		{"env shadows TLS_DIR", "env: {TLS_DIR: /x}", "env.TLS_DIR: kuberpc sets TLS_DIR itself"},
		{"a field in another case", "Replicas: 5", `unknown field "Replicas": field names are case-sensitive, did you mean "replicas"?`},
		{"a field twice, in two cases", "replicas: 3\nREPLICAS: 5", `unknown field "REPLICAS"`},
		{"a nested field in another case", "drain: {Timeout: 1s}", `unknown field "drain.Timeout"`},
		{"a rule's callers twice, in two cases", "security: {rules: [{methods: [\"*\"], callers: [default/a], Callers: [\"*\"]}]}", `unknown field "security.rules[0].Callers"`},
		{"scale-down stabilization too long", "autoscaling: {minReplicas: 1, maxReplicas: 2, scaleDownStabilization: 2h}", `autoscaling.scaleDownStabilization: "2h"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manifests.Parse([]byte(base + tc.yaml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
}

// TestEnvOverrideReplacesTheRuntimeVariable: with envOverride the user's
// value is the only one rendered.
func TestEnvOverrideReplacesTheRuntimeVariable(t *testing.T) {
	d := deploymentOf(t, "name: greeter\nimage: x\nenv: {DRAIN_DELAY: 1s}\nenvOverride: [DRAIN_DELAY]\n---\n# a comment-only document is not a document\n")
	var values []string
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "DRAIN_DELAY" {
			values = append(values, e.Value)
		}
	}
	if len(values) != 1 || values[0] != "1s" {
		t.Errorf("DRAIN_DELAY rendered as %v; want only the override 1s", values)
	}
	if g := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; g <= 0 {
		t.Errorf("terminationGracePeriodSeconds %d", g)
	}
}

// TestProbeTypes: each probe type renders one handler of its kind in the
// startup, readiness and liveness probes (the kuberpc default keeps
// liveness on /healthz), and none renders no probe.
func TestProbeTypes(t *testing.T) {
	const base = "name: greeter\nimage: kuberpc.local/greeter:v1\n"
	for _, tc := range []struct {
		yaml, readiness, liveness string
	}{
		{"", "grpc:50051", "http:/healthz:metrics"},
		{"probes: {type: grpc, port: 7000}", "grpc:7000", "grpc:7000"},
		{"probes: {type: tcp}", "tcp:50051", "tcp:50051"},
		{"probes: {type: http, port: 8080}", "http:/:8080", "http:/:8080"},
		{"probes: {type: exec, command: [/bin/check, --fast]}", "exec:/bin/check --fast", "exec:/bin/check --fast"},
		{"probes: {type: none}", "", ""},
	} {
		c := deploymentOf(t, base+tc.yaml+"\n").Spec.Template.Spec.Containers[0]
		if got := handler(c.ReadinessProbe); got != tc.readiness || handler(c.StartupProbe) != tc.readiness {
			t.Errorf("%q: readiness %q, startup %q; want %q", tc.yaml, got, handler(c.StartupProbe), tc.readiness)
		}
		if got := handler(c.LivenessProbe); got != tc.liveness {
			t.Errorf("%q: liveness %q; want %q", tc.yaml, got, tc.liveness)
		}
	}
}

// deploymentOf parses kuberpc.yaml text and returns the Deployment it
// renders.
func deploymentOf(t *testing.T, yaml string) *appsv1.Deployment {
	t.Helper()
	app, err := manifests.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%q: %v", yaml, err)
	}
	for _, o := range manifests.Objects(app) {
		if d, ok := o.(*appsv1.Deployment); ok {
			return d
		}
	}
	t.Fatalf("%q renders no Deployment", yaml)
	return nil
}

// handler describes a probe's handler, "" for no probe.
func handler(p *corev1.Probe) string {
	switch {
	case p == nil:
		return ""
	case p.GRPC != nil && p.HTTPGet == nil && p.TCPSocket == nil && p.Exec == nil:
		return fmt.Sprintf("grpc:%d", p.GRPC.Port)
	case p.TCPSocket != nil && p.HTTPGet == nil && p.Exec == nil:
		return "tcp:" + p.TCPSocket.Port.String()
	case p.HTTPGet != nil && p.Exec == nil:
		return "http:" + p.HTTPGet.Path + ":" + p.HTTPGet.Port.String()
	case p.Exec != nil:
		return "exec:" + strings.Join(p.Exec.Command, " ")
	}
	return "several handlers"
}

// TestSecurityObjects: security renders the workload certificate volume,
// the runtime's settings, the token reviewer's RBAC and a NetworkPolicy
// from the rules' callers, and probes readiness over HTTP.
func TestSecurityObjects(t *testing.T) {
	app, err := manifests.Parse([]byte(`name: greeter
namespace: shop
image: x
security:
  mutualTLS: true
  tokenAudience: greeter
  rules:
  - methods: [/example.ExampleService/SayHello]
    callers: [shop/frontend, jobs/*]
`))
	if err != nil {
		t.Fatal(err)
	}
	var deploy *appsv1.Deployment
	var netpol *networkingv1.NetworkPolicy
	var crb *rbacv1.ClusterRoleBinding
	for _, o := range manifests.Objects(app) {
		switch o := o.(type) {
		case *appsv1.Deployment:
			deploy = o
		case *networkingv1.NetworkPolicy:
			netpol = o
		case *rbacv1.ClusterRoleBinding:
			crb = o
		}
	}
	pod := deploy.Spec.Template.Spec
	c := pod.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["TLS_DIR"] != manifests.TLSDir || env["TLS_CLIENT_AUTH"] != "require" || env["AUTH_AUDIENCE"] != "greeter" ||
		!strings.Contains(env["AUTHZ_POLICY_INLINE"], `"callers":["shop/frontend","jobs/*"]`) {
		t.Errorf("env = %v", env)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].CSI == nil || pod.Volumes[0].CSI.Driver != manifests.SPIFFEDriver ||
		len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != manifests.TLSDir {
		t.Errorf("volumes %+v, mounts %+v", pod.Volumes, c.VolumeMounts)
	}
	if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Error("the server's token is not mounted; it needs it to review callers' tokens")
	}
	if crb == nil || crb.RoleRef.Name != "system:auth-delegator" || crb.Subjects[0].Name != "greeter" || crb.Subjects[0].Namespace != "shop" || crb.Namespace != "" {
		t.Errorf("ClusterRoleBinding = %+v", crb)
	}
	if h := c.ReadinessProbe.HTTPGet; h == nil || h.Path != "/readyz" {
		t.Errorf("readiness probe %+v, want HTTP /readyz (the kubelet's gRPC probe has no TLS)", c.ReadinessProbe)
	}
	var nss []string
	for _, p := range netpol.Spec.Ingress[0].From {
		nss = append(nss, p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
	}
	if strings.Join(nss, ",") != "shop,jobs" {
		t.Errorf("NetworkPolicy admits namespaces %v, want the rules' shop and jobs", nss)
	}
}

// TestMemoryLimitReachesTheServer: the container's memory limit (256Mi
// by default) is passed to the server as MEMORY_LIMIT through the
// downward API, so that it follows the Deployment's limit.
func TestMemoryLimitReachesTheServer(t *testing.T) {
	for _, tc := range []struct{ yaml, limit string }{
		{"name: greeter\nimage: x\n", "256Mi"},
		{"name: greeter\nimage: x\nresources: {memoryLimit: 1Gi}\n", "1Gi"},
	} {
		c := deploymentOf(t, tc.yaml).Spec.Template.Spec.Containers[0]
		if got := c.Resources.Limits.Memory().String(); got != tc.limit {
			t.Errorf("%q: memory limit %s, want %s", tc.yaml, got, tc.limit)
		}
		var found bool
		for _, e := range c.Env {
			if e.Name != "MEMORY_LIMIT" {
				continue
			}
			found = true
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil ||
				e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" || e.ValueFrom.ResourceFieldRef.ContainerName != c.Name {
				t.Errorf("%q: MEMORY_LIMIT rendered as %+v, want the container's limits.memory from the downward API", tc.yaml, e)
			}
		}
		if !found {
			t.Errorf("%q: no MEMORY_LIMIT in the container's env", tc.yaml)
		}
	}
}

// TestEveryObjectCarriesTheManagedLabels: kuberpc deploy finds what an
// earlier deploy of the app made, to prune what the app no longer has, by
// ManagedLabels, and a cluster-scoped object also by NamespaceLabel.
func TestEveryObjectCarriesTheManagedLabels(t *testing.T) {
	app, err := manifests.Parse([]byte(`name: greeter
namespace: shop
image: x
autoscaling: {minReplicas: 1, maxReplicas: 3, requestsPerSecond: 10}
security: {tokenAudience: greeter}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := manifests.ManagedLabels(app)
	for _, o := range manifests.Objects(app) {
		kind := o.GetObjectKind().GroupVersionKind().Kind
		w := maps.Clone(want)
		if o.GetNamespace() == "" {
			w[manifests.NamespaceLabel] = "shop"
		}
		if got := o.GetLabels(); !maps.Equal(got, w) {
			t.Errorf("%s %s: labels %v, want %v", kind, o.GetName(), got, w)
		}
	}
}
