package cli

import (
	"encoding/json"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func deploymentWith(c corev1.Container) *appsv1.Deployment {
	d := &appsv1.Deployment{}
	d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "sidecar"}, c}
	return d
}

func TestHandlerPatches(t *testing.T) {
	grpc := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 50051}}, PeriodSeconds: 2}
	tcp := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(50051)}}, PeriodSeconds: 5}
	live := deploymentWith(corev1.Container{Name: "server", ReadinessProbe: tcp, LivenessProbe: grpc, StartupProbe: grpc,
		Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "5"}}}}})
	want := deploymentWith(corev1.Container{Name: "server", ReadinessProbe: grpc, LivenessProbe: grpc, StartupProbe: grpc,
		Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}})
	ops := handlerPatches(live, want)
	b, _ := json.Marshal(ops)
	const wantOps = `[{"op":"replace","path":"/spec/template/spec/containers/1/readinessProbe","value":{"grpc":{"port":50051,"service":null},"periodSeconds":2}},` +
		`{"op":"replace","path":"/spec/template/spec/containers/1/lifecycle/preStop","value":{"sleep":{"seconds":5}}}]`
	if string(b) != wantOps {
		t.Errorf("patch\n%s\nwant\n%s", b, wantOps)
	}
	// The same handler types, other settings: server-side apply's merge
	// is right, no patch.
	if ops := handlerPatches(want, deploymentWith(corev1.Container{Name: "server", ReadinessProbe: grpc, LivenessProbe: grpc})); len(ops) != 0 {
		t.Errorf("same kinds: patch %v, want none", ops)
	}
}
