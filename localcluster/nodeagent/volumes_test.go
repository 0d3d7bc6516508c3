package nodeagent

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestMounts: the agent mounts projected token and csi-driver-spiffe
// volumes under /var/run/secrets, and refuses, naming the volume, what it
// cannot provide.
func TestMounts(t *testing.T) {
	token := corev1.Volume{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "example", Path: "token"}}}}}}
	cert := corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: SPIFFEDriver}}}
	for _, tc := range []struct {
		name   string
		vol    corev1.Volume
		mount  corev1.VolumeMount
		want   string // error text; empty for success
		target string
	}{
		{"token", token, corev1.VolumeMount{Name: "token", MountPath: "/var/run/secrets/tokens"}, "", "/var/run/secrets/tokens"},
		{"certificate", cert, corev1.VolumeMount{Name: "tls", MountPath: "/var/run/secrets/kuberpc.dev/tls/"}, "", "/var/run/secrets/kuberpc.dev/tls"},
		{"the API access volume", corev1.Volume{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ConfigMap: &corev1.ConfigMapProjection{}}}}}},
			corev1.VolumeMount{Name: "kube-api-access-x", MountPath: SecretsDir}, "", ""},
		{"outside secrets", cert, corev1.VolumeMount{Name: "tls", MountPath: "/etc/tls"}, "volumeMount tls at /etc/tls: the local cluster's node agent mounts volumes only under /var/run/secrets", ""},
		{"escaping secrets", cert, corev1.VolumeMount{Name: "tls", MountPath: "/var/run/secrets/../../etc"}, "only under /var/run/secrets", ""},
		{"under the default token", cert, corev1.VolumeMount{Name: "tls", MountPath: SecretsDir + "/x"}, "not at " + SecretsDir, ""},
		{"no such volume", cert, corev1.VolumeMount{Name: "other", MountPath: "/var/run/secrets/x"}, "volumeMount other: the pod has no such volume", ""},
		{"subPath", cert, corev1.VolumeMount{Name: "tls", MountPath: "/var/run/secrets/x", SubPath: "tls.crt"}, "subPath", ""},
		{"other CSI driver", corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "csi.example.com"}}},
			corev1.VolumeMount{Name: "v", MountPath: "/var/run/secrets/x"}, "volume v: CSI driver csi.example.com is not served", ""},
		{"emptyDir", corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			corev1.VolumeMount{Name: "v", MountPath: "/var/run/secrets/x"}, "volume v: the local cluster's node agent provides projected serviceAccountToken and csi", ""},
		{"token path with a slash", corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "../token"}}}}}},
			corev1.VolumeMount{Name: "v", MountPath: "/var/run/secrets/x"}, `token path "../token" must be a plain file name`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &podRun{dir: "/pods/p", pod: &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{tc.vol}}}}
			m, err := p.mounts(corev1.Container{VolumeMounts: []corev1.VolumeMount{tc.mount}})
			switch {
			case tc.target == "" && tc.want == "":
				if err != nil || len(m) != 0 {
					t.Errorf("mounts = %+v, %v; want none (the agent mounts the token itself)", m, err)
				}
			case tc.want == "" && err != nil:
				t.Fatalf("mounts: %v", err)
			case tc.want == "":
				if len(m) != 1 || m[0].dst != tc.target || m[0].src != "/pods/p/volumes/"+tc.vol.Name {
					t.Errorf("mounts = %+v", m)
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Errorf("mounts = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
