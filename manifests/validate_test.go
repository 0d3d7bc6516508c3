package manifests_test

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

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
	app, err := manifests.Parse([]byte("name: greeter\nimage: x\nenv: {DRAIN_DELAY: 1s}\nenvOverride: [DRAIN_DELAY]\n---\n# a comment-only document is not a document\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range manifests.Objects(app) {
		d, ok := o.(*appsv1.Deployment)
		if !ok {
			continue
		}
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
		app, err := manifests.Parse([]byte(base + tc.yaml + "\n"))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		var c corev1.Container
		for _, o := range manifests.Objects(app) {
			if d, ok := o.(*appsv1.Deployment); ok {
				c = d.Spec.Template.Spec.Containers[0]
			}
		}
		if got := handler(c.ReadinessProbe); got != tc.readiness || handler(c.StartupProbe) != tc.readiness {
			t.Errorf("%q: readiness %q, startup %q; want %q", tc.yaml, got, handler(c.StartupProbe), tc.readiness)
		}
		if got := handler(c.LivenessProbe); got != tc.liveness {
			t.Errorf("%q: liveness %q; want %q", tc.yaml, got, tc.liveness)
		}
	}
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
