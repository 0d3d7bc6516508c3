package nodeagent

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kresource "k8s.io/kubectl/pkg/util/resource"
)

// envSource reads an envFrom ConfigMap or Secret.
func (a *Agent) envSource(ctx context.Context, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	optional := func(o *bool) bool { return o != nil && *o }
	switch {
	case from.ConfigMapRef != nil:
		cm, err := a.client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			if optional(from.ConfigMapRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom configmap %s: %w", from.ConfigMapRef.Name, err)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		s, err := a.client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			if optional(from.SecretRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom secret %s: %w", from.SecretRef.Name, err)
		}
		out := map[string]string{}
		for k, v := range s.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

// envValue resolves an env valueFrom: the downward API (fieldRef) and
// ConfigMap or Secret keys.
func (a *Agent) envValue(ctx context.Context, p *podRun, from *corev1.EnvVarSource) (string, error) {
	pod := p.pod
	switch {
	case from.FieldRef != nil:
		path := from.FieldRef.FieldPath
		switch path {
		case "metadata.name":
			return pod.Name, nil
		case "metadata.namespace":
			return pod.Namespace, nil
		case "metadata.uid":
			return string(pod.UID), nil
		case "spec.nodeName":
			return pod.Spec.NodeName, nil
		case "spec.serviceAccountName":
			return pod.Spec.ServiceAccountName, nil
		case "status.podIP", "status.podIPs":
			return p.ip.String(), nil
		case "status.hostIP", "status.hostIPs":
			return a.gateway.String(), nil
		}
		for _, prefix := range []string{"metadata.labels['", "metadata.annotations['"} {
			if strings.HasPrefix(path, prefix) && strings.HasSuffix(path, "']") {
				k := strings.TrimSuffix(strings.TrimPrefix(path, prefix), "']")
				if strings.HasPrefix(prefix, "metadata.labels") {
					return pod.Labels[k], nil
				}
				return pod.Annotations[k], nil
			}
		}
		return "", fmt.Errorf("fieldRef %q is not supported", path)
	case from.ResourceFieldRef != nil:
		c := p.container(from.ResourceFieldRef.ContainerName)
		if c == nil {
			return "", fmt.Errorf("resourceFieldRef: no container %q", from.ResourceFieldRef.ContainerName)
		}
		return resourceFieldValue(from.ResourceFieldRef, c.spec, a.allocatable())

	case from.ConfigMapKeyRef != nil:
		r := from.ConfigMapKeyRef
		cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			if r.Optional != nil && *r.Optional {
				return "", nil
			}
			return "", fmt.Errorf("configmap %s: %w", r.Name, err)
		}
		v, ok := cm.Data[r.Key]
		if !ok && (r.Optional == nil || !*r.Optional) {
			return "", fmt.Errorf("configmap %s has no key %q", r.Name, r.Key)
		}
		return v, nil
	case from.SecretKeyRef != nil:
		r := from.SecretKeyRef
		s, err := a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			if r.Optional != nil && *r.Optional {
				return "", nil
			}
			return "", fmt.Errorf("secret %s: %w", r.Name, err)
		}
		v, ok := s.Data[r.Key]
		if !ok && (r.Optional == nil || !*r.Optional) {
			return "", fmt.Errorf("secret %s has no key %q", r.Name, r.Key)
		}
		return string(v), nil
	}
	return "", fmt.Errorf("unsupported valueFrom")
}

// resourceFieldValue is the downward API's value of a container's
// resource as the kubelet gives it: divided by the selector's divisor
// (1 by default) and rounded up, so limits.memory is a count of bytes
// (GOMEMLIMIT takes it as is); a limit the container does not set is the
// node's allocatable amount.
func resourceFieldValue(fs *corev1.ResourceFieldSelector, c corev1.Container, allocatable corev1.ResourceList) (string, error) {
	c.Resources.Limits = c.Resources.Limits.DeepCopy()
	if c.Resources.Limits == nil {
		c.Resources.Limits = corev1.ResourceList{}
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
		if _, ok := c.Resources.Limits[name]; !ok {
			if q, ok := allocatable[name]; ok {
				c.Resources.Limits[name] = q
			}
		}
	}
	v, err := kresource.ExtractContainerResourceValue(fs, &c)
	if err != nil {
		return "", fmt.Errorf("resourceFieldRef: %w", err)
	}
	return v, nil
}
