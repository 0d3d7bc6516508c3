package metricsadapter

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/kuberpc/kuberpc/manifests"
)

// Name is the adapter's Deployment, Service and ServiceAccount.
const Name = "kuberpc-metrics-adapter"

// Manifests are the objects that run the adapter on a cluster, in
// namespace, from image (the kuberpc CLI, whose "metrics-adapter" command
// it runs): its ServiceAccount with least privilege (read pods; delegate
// authentication and authorization: system:auth-delegator and
// extension-apiserver-authentication-reader), a Deployment serving on 6443
// with a self-signed certificate (the apiserver then skips verifying it,
// as prometheus-adapter's manifests do), its Service, and the APIServices
// of custom.metrics.k8s.io v1beta2 and v1beta1. The adapter scrapes pods
// on their "metrics" port: a NetworkPolicy in front of them must admit
// it: kuberpc's manifests admit pods with manifests.ScraperLabels, which
// the Deployment's pods carry.
func Manifests(namespace, image string) []manifests.Object {
	labels := map[string]string{"app.kubernetes.io/name": Name, "app.kubernetes.io/managed-by": "kuberpc"}
	// The pods carry the scraper's labels (which name them as the
	// scraper) and select on a component label of their own.
	selector := map[string]string{"app.kubernetes.io/component": Name}
	podLabels := map[string]string{}
	for k, v := range manifests.ScraperLabels {
		podLabels[k] = v
	}
	for k, v := range selector {
		podLabels[k] = v
	}
	meta := func(name, ns string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}
	}
	tm := func(apiVersion, kind string) metav1.TypeMeta {
		return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
	}
	rbac := "rbac.authorization.k8s.io"
	sa := []rbacv1.Subject{{Kind: "ServiceAccount", Name: Name, Namespace: namespace}}
	one := int32(1)
	port := int32(6443)
	objs := []manifests.Object{
		&corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(Name, namespace)},
		&rbacv1.ClusterRole{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: meta(Name, ""),
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}}}},
		&rbacv1.ClusterRoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: meta(Name, ""),
			RoleRef: rbacv1.RoleRef{APIGroup: rbac, Kind: "ClusterRole", Name: Name}, Subjects: sa},
		&rbacv1.ClusterRoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: meta(Name+":auth-delegator", ""),
			RoleRef: rbacv1.RoleRef{APIGroup: rbac, Kind: "ClusterRole", Name: "system:auth-delegator"}, Subjects: sa},
		&rbacv1.RoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: meta(Name+":auth-reader", metav1.NamespaceSystem),
			RoleRef: rbacv1.RoleRef{APIGroup: rbac, Kind: "Role", Name: "extension-apiserver-authentication-reader"}, Subjects: sa},
		&appsv1.Deployment{TypeMeta: tm("apps/v1", "Deployment"), ObjectMeta: meta(Name, namespace), Spec: appsv1.DeploymentSpec{
			Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels}, Spec: corev1.PodSpec{
				ServiceAccountName: Name,
				SecurityContext:    &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(65532)), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
				Containers: []corev1.Container{{
					Name: "adapter", Image: image,
					Args:  []string{"metrics-adapter", "--secure-port=6443", "--cert-dir=/tmp/certs", "--window=30s", "--interval=5s"},
					Ports: []corev1.ContainerPort{{Name: "https", ContainerPort: port}},
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
					},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}}},
					LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/livez", Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}}},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					VolumeMounts: []corev1.VolumeMount{{Name: "certs", MountPath: "/tmp/certs"}},
				}},
				Volumes: []corev1.Volume{{Name: "certs", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			}},
		}},
		&corev1.Service{TypeMeta: tm("v1", "Service"), ObjectMeta: meta(Name, namespace), Spec: corev1.ServiceSpec{
			Selector: selector, Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromString("https")}},
		}},
	}
	for _, v := range []string{"v1beta2", "v1beta1"} {
		objs = append(objs, &apiregv1.APIService{TypeMeta: tm("apiregistration.k8s.io/v1", "APIService"), ObjectMeta: meta(v+".custom.metrics.k8s.io", ""),
			Spec: apiregv1.APIServiceSpec{
				Service: &apiregv1.ServiceReference{Namespace: namespace, Name: Name, Port: ptr(int32(443))},
				Group:   "custom.metrics.k8s.io", Version: v, InsecureSkipTLSVerify: true,
				GroupPriorityMinimum: 100, VersionPriority: map[string]int32{"v1beta2": 200, "v1beta1": 100}[v],
			}})
	}
	return objs
}

func ptr[T any](v T) *T { return &v }
