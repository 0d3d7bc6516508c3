package cli

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Server-side apply merges: a probe whose handler another field manager
// changed (kubectl patch of readinessProbe from grpc to tcpSocket) keeps
// that manager's tcpSocket beside the grpc kuberpc applies, and the
// apiserver rejects the pod template ("may not specify more than 1
// handler type") on every later deploy. replaceForeignHandlers takes the
// probe or hook back first, whole, with a JSON patch.

// handlerPatches returns the JSON-patch operations that replace, in live,
// each probe and lifecycle hook of want's containers whose handler type
// differs from want's.
func handlerPatches(live, want *appsv1.Deployment) []map[string]any {
	var ops []map[string]any
	for i, lc := range live.Spec.Template.Spec.Containers {
		var wc *corev1.Container
		for j := range want.Spec.Template.Spec.Containers {
			if want.Spec.Template.Spec.Containers[j].Name == lc.Name {
				wc = &want.Spec.Template.Spec.Containers[j]
			}
		}
		if wc == nil {
			continue
		}
		base := fmt.Sprintf("/spec/template/spec/containers/%d/", i)
		for _, p := range []struct {
			field      string
			live, want *corev1.Probe
		}{{"startupProbe", lc.StartupProbe, wc.StartupProbe}, {"readinessProbe", lc.ReadinessProbe, wc.ReadinessProbe}, {"livenessProbe", lc.LivenessProbe, wc.LivenessProbe}} {
			if p.live != nil && p.want != nil && probeKind(&p.live.ProbeHandler) != probeKind(&p.want.ProbeHandler) {
				ops = append(ops, map[string]any{"op": "replace", "path": base + p.field, "value": p.want})
			}
		}
		if lc.Lifecycle != nil && wc.Lifecycle != nil {
			for _, h := range []struct {
				field      string
				live, want *corev1.LifecycleHandler
			}{{"preStop", lc.Lifecycle.PreStop, wc.Lifecycle.PreStop}, {"postStart", lc.Lifecycle.PostStart, wc.Lifecycle.PostStart}} {
				if h.live != nil && h.want != nil && hookKind(h.live) != hookKind(h.want) {
					ops = append(ops, map[string]any{"op": "replace", "path": base + "lifecycle/" + h.field, "value": h.want})
				}
			}
		}
	}
	return ops
}

// probeKind names the handler types set in h, in a fixed order.
func probeKind(h *corev1.ProbeHandler) string {
	return fmt.Sprint(h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.GRPC != nil)
}

func hookKind(h *corev1.LifecycleHandler) string {
	return fmt.Sprint(h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.Sleep != nil)
}

// replaceForeignHandlers patches the live Deployment's probes and hooks
// whose handler type differs from want's (see handlerPatches); a missing
// Deployment has none. It reports whether it patched anything.
//
// The patch names containers by index, so it first tests that each index
// still holds the container it was computed for; it does not test the
// resourceVersion, which the deployment controller's status writes move
// on every step of a rollout (a deploy right after another manager's
// patch failed on that, see TestPlainGrpcioServerDeployedByKuberpc).
func replaceForeignHandlers(ctx context.Context, dyn dynamic.Interface, want *appsv1.Deployment, dryRun []string) (bool, error) {
	r := dyn.Resource(appsv1.SchemeGroupVersion.WithResource("deployments")).Namespace(want.Namespace)
	u, err := r.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var live appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &live); err != nil {
		return false, err
	}
	ops := handlerPatches(&live, want)
	if len(ops) == 0 {
		return false, nil
	}
	var tests []map[string]any
	for i, c := range live.Spec.Template.Spec.Containers {
		tests = append(tests, map[string]any{"op": "test", "path": fmt.Sprintf("/spec/template/spec/containers/%d/name", i), "value": c.Name})
	}
	b, err := json.Marshal(append(tests, ops...))
	if err != nil {
		return false, err
	}
	if _, err = r.Patch(ctx, want.Name, types.JSONPatchType, b, metav1.PatchOptions{FieldManager: FieldManager, DryRun: dryRun}); err != nil {
		return false, err
	}
	return true, nil
}
