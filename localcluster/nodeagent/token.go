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

// refreshAfter is when, into a token's lifetime, the agent renews it:
// at 80 %, as the kubelet does.
func refreshAfter(lifetime time.Duration) time.Duration { return lifetime * 4 / 5 }

// requestToken asks the TokenRequest API for the token of the pod's
// service account, for audiences (none: the API server's own), valid for
// secs and bound to the pod; it returns the token and when to renew it.
func (a *Agent) requestToken(ctx context.Context, pod *corev1.Pod, audiences []string, secs int64) (string, time.Time, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	issued := time.Now()
	tr, err := a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{
			Audiences:         audiences,
			ExpirationSeconds: &secs,
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token for service account %s/%s (audiences %q): %w", pod.Namespace, sa, audiences, err)
	}
	return tr.Status.Token, issued.Add(refreshAfter(tr.Status.ExpirationTimestamp.Sub(issued))), nil
}

// projectToken writes the pod's service-account token (from the
// TokenRequest API, bound to the pod), the cluster CA and the namespace
// into dir, and returns when to renew the token.
func (a *Agent) projectToken(ctx context.Context, pod *corev1.Pod, dir string) (time.Time, error) {
	token, refresh, err := a.requestToken(ctx, pod, nil, int64(tokenLifetime.Seconds()))
	if err != nil {
		return time.Time{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return time.Time{}, err
	}
	files := map[string][]byte{
		"token":     []byte(token),
		"ca.crt":    a.caPEM,
		"namespace": []byte(pod.Namespace),
	}
	for name, b := range files {
		if err := writeAtomic(filepath.Join(dir, name), b); err != nil {
			return time.Time{}, err
		}
	}
	return refresh, nil
}

// keepTokenFresh renews the pod's token in dir, first at refresh, until
// ctx ends.
func (a *Agent) keepTokenFresh(ctx context.Context, pod *corev1.Pod, dir string, refresh time.Time) {
	a.keepFresh(ctx, pod, "service-account token", refresh, func(ctx context.Context) (time.Time, error) {
		return a.projectToken(ctx, pod, dir)
	})
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
