package nodeagent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tokenLifetime is what the node agent asks the TokenRequest API for; it
// refreshes at 80 % of the lifetime, as the kubelet does.
const tokenLifetime = time.Hour

// projectToken writes the pod's service-account token (from the
// TokenRequest API, bound to the pod), the cluster CA and the namespace
// into dir, and returns when the token expires so the caller can refresh.
func (a *Agent) projectToken(ctx context.Context, pod *corev1.Pod, dir string) (time.Time, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	secs := int64(tokenLifetime.Seconds())
	tr, err := a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{
			ExpirationSeconds: &secs,
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return time.Time{}, fmt.Errorf("token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return time.Time{}, err
	}
	files := map[string][]byte{
		"token":     []byte(tr.Status.Token),
		"ca.crt":    a.caPEM,
		"namespace": []byte(pod.Namespace),
	}
	for name, b := range files {
		if err := writeAtomic(filepath.Join(dir, name), b); err != nil {
			return time.Time{}, err
		}
	}
	return tr.Status.ExpirationTimestamp.Time, nil
}

// refreshTokens keeps dir's token fresh until ctx ends.
func (a *Agent) refreshTokens(ctx context.Context, pod *corev1.Pod, dir string, expires time.Time) {
	for {
		issued := time.Now()
		wait := time.Duration(float64(expires.Sub(issued)) * 0.8)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		var err error
		for attempt := 0; ; attempt++ {
			if expires, err = a.projectToken(ctx, pod, dir); err == nil {
				break
			}
			a.log.Warn("refresh service-account token", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(min(attempt+1, 30)) * time.Second):
			}
		}
	}
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
