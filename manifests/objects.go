package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/kuberpc/kuberpc/security"
)

// Object is a typed Kubernetes object with its TypeMeta set.
type Object interface {
	runtime.Object
	metav1.Object
}

// ScraperLabels select the metrics scraper the NetworkPolicy admits to
// the metrics port, in any namespace.
var ScraperLabels = map[string]string{"app.kubernetes.io/name": "prometheus"}

// ClientServiceAccount is the ServiceAccount clients of app run as to
// resolve it with the kubernetes resolver.
func ClientServiceAccount(app App) string { return app.Name + "-client" }

// Labels are the labels of app's pods.
func Labels(app App) map[string]string {
	return map[string]string{"app.kubernetes.io/name": app.Name}
}

// NamespaceLabel names, on the cluster-scoped objects kuberpc renders for
// an app, the app's namespace: their name and ManagedLabels alone would
// not tell apart two apps of one name in two namespaces.
const NamespaceLabel = "kuberpc.dev/namespace"

// ManagedLabels are the labels every object kuberpc renders for app
// carries (Labels and app.kubernetes.io/managed-by=kuberpc); with
// NamespaceLabel on cluster-scoped ones, they find the objects an earlier
// deploy of app made.
func ManagedLabels(app App) map[string]string {
	l := map[string]string{"app.kubernetes.io/managed-by": "kuberpc"}
	maps.Copy(l, Labels(app))
	return l
}

func dur(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// TerminationGracePeriod is what a pod of app needs to drain: the preStop
// sleep, the propagation delay, the drain timeout and 5s to exit (the
// server runtime's Drain.TerminationGracePeriod plus the preStop sleep).
func TerminationGracePeriod(app App) time.Duration {
	return dur(app.Drain.PreStopSleep) + dur(app.Drain.PropagationDelay) + dur(app.Drain.Timeout) + 5*time.Second
}

// Objects returns app's objects, in the order they should be applied.
// app must have been through Defaults and Validate (Parse does both).
func Objects(app App) []Object {
	labels := Labels(app)
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: app.Namespace, Labels: ManagedLabels(app)}
	}
	grpcPort, metricsPort := *app.Ports.GRPC, *app.Ports.Metrics
	h2c := "kubernetes.io/h2c"
	httpProto := "http"

	serverSA := &corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(app.Name),
		AutomountServiceAccountToken: ptr(false)}
	clientSA := &corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(ClientServiceAccount(app))}
	role := &rbacv1.Role{TypeMeta: tm("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: meta(app.Name + "-endpoints-reader"),
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"},
			Verbs: []string{"get", "list", "watch"},
		}}}
	binding := &rbacv1.RoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: meta(app.Name + "-endpoints-reader"),
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: clientSA.Name, Namespace: app.Namespace}}}

	svcPorts := []corev1.ServicePort{
		{Name: "grpc", Port: grpcPort, TargetPort: intstr.FromString("grpc"), AppProtocol: &h2c},
		{Name: "metrics", Port: metricsPort, TargetPort: intstr.FromString("metrics"), AppProtocol: &httpProto},
	}
	svc := &corev1.Service{TypeMeta: tm("v1", "Service"), ObjectMeta: meta(app.Name),
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: labels, Ports: svcPorts}}
	headless := &corev1.Service{TypeMeta: tm("v1", "Service"), ObjectMeta: meta(app.Name + "-headless"),
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels, Ports: svcPorts}}

	res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	setQ(res.Requests, corev1.ResourceCPU, app.Resources.CPURequest)
	setQ(res.Requests, corev1.ResourceMemory, app.Resources.MemoryRequest)
	setQ(res.Limits, corev1.ResourceCPU, app.Resources.CPULimit)
	setQ(res.Limits, corev1.ResourceMemory, app.Resources.MemoryLimit)

	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_NAMESPACE", "metadata.namespace"), fieldEnv("POD_IP", "status.podIP"),
		{Name: "PORT", Value: strconv.Itoa(int(grpcPort))},
		{Name: "METRICS_PORT", Value: strconv.Itoa(int(metricsPort))},
		{Name: "DRAIN_DELAY", Value: app.Drain.PropagationDelay},
		{Name: "DRAIN_TIMEOUT", Value: app.Drain.Timeout},
	}
	if _, ok := res.Limits[corev1.ResourceMemory]; ok {
		// The server sets the Go runtime's soft memory limit from it
		// (server.Config.MemoryLimit), so the garbage collector works
		// harder before the kernel OOM-kills the container. Taken from
		// the downward API, it follows the limit when someone changes
		// it on the Deployment.
		env = append(env, corev1.EnvVar{Name: "MEMORY_LIMIT", ValueFrom: &corev1.EnvVarSource{
			ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: containerName, Resource: "limits.memory", Divisor: resource.MustParse("1")}}})
	}
	if _, ok := app.Env["OTEL_SERVICE_NAME"]; !ok {
		// Traces name the service after the app.
		env = append(env, corev1.EnvVar{Name: "OTEL_SERVICE_NAME", Value: app.Name})
	}
	for _, k := range sortedKeys(app.Env) {
		// An override (envOverride) replaces kuberpc's own variable.
		env = slices.DeleteFunc(env, func(e corev1.EnvVar) bool { return e.Name == k })
		env = append(env, corev1.EnvVar{Name: k, Value: app.Env[k]})
	}
	container := corev1.Container{
		Name: containerName, Image: app.Image, Env: env, Resources: res,
		Ports: []corev1.ContainerPort{
			{Name: "grpc", ContainerPort: grpcPort, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", ContainerPort: metricsPort, Protocol: corev1.ProtocolTCP},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true), RunAsNonRoot: ptr(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	setProbes(&container, app.Probes, grpcPort, app.Security.tls())
	if d := dur(app.Drain.PreStopSleep); d > 0 {
		container.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: int64(d.Seconds())}}}
	}
	grace := int64(TerminationGracePeriod(app).Seconds())
	podLabels := map[string]string{}
	for k, v := range labels {
		podLabels[k] = v
	}
	deploy := &appsv1.Deployment{TypeMeta: tm("apps/v1", "Deployment"), ObjectMeta: meta(app.Name),
		Spec: appsv1.DeploymentSpec{
			Replicas: app.Replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr(intstr.FromInt32(0)), MaxSurge: ptr(intstr.FromInt32(1)),
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: map[string]string{
					"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(int(metricsPort)),
				}},
				Spec: corev1.PodSpec{
					ServiceAccountName:            serverSA.Name,
					AutomountServiceAccountToken:  ptr(false),
					TerminationGracePeriodSeconds: &grace,
					PriorityClassName:             app.PriorityClassName,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(65532)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{
						{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}},
						{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}},
					},
					Containers: []corev1.Container{container},
				},
			},
		}}
	if app.Autoscaling != nil {
		deploy.Spec.Replicas = nil // the HPA owns the replica count
	}

	pdb := &policyv1.PodDisruptionBudget{TypeMeta: tm("policy/v1", "PodDisruptionBudget"), ObjectMeta: meta(app.Name),
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels}}}

	from := []networkingv1.NetworkPolicyPeer{}
	for _, c := range app.Callers {
		peer := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: c.PodLabels}}
		if c.Namespace != "" && c.Namespace != app.Namespace {
			peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": c.Namespace}}
		}
		from = append(from, peer)
	}
	if len(from) == 0 {
		from = append(from, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{}}) // the namespace's pods
	}
	tcp := corev1.ProtocolTCP
	netpol := &networkingv1.NetworkPolicy{TypeMeta: tm("networking.k8s.io/v1", "NetworkPolicy"), ObjectMeta: meta(app.Name),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: labels},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: from, Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr(intstr.FromString("grpc"))}}},
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: ScraperLabels}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr(intstr.FromString("metrics"))}}},
			},
		}}

	objs := []Object{serverSA, clientSA, role, binding, svc, headless, deploy, pdb, netpol}
	objs = append(objs, secure(app, meta, deploy, serverSA, netpol)...)
	if as := app.Autoscaling; as != nil {
		metrics := []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
			Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: as.CPUUtilization},
		}}}
		if as.RequestsPerSecond != nil {
			q := resource.NewQuantity(int64(*as.RequestsPerSecond), resource.DecimalSI)
			metrics = append(metrics, autoscalingv2.MetricSpec{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: RequestsPerSecondMetric},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: q},
			}})
		}
		objs = append(objs, &autoscalingv2.HorizontalPodAutoscaler{TypeMeta: tm("autoscaling/v2", "HorizontalPodAutoscaler"), ObjectMeta: meta(app.Name),
			Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
				ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: app.Name},
				MinReplicas:    &as.MinReplicas, MaxReplicas: as.MaxReplicas, Metrics: metrics,
				Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: &autoscalingv2.HPAScalingRules{
					StabilizationWindowSeconds: ptr(int32(dur(as.ScaleDownStabilization).Seconds())),
				}},
			}})
	}
	return objs
}

// YAML renders objects as one multi-document YAML stream.
func YAML(objs []Object) ([]byte, error) {
	var b bytes.Buffer
	for i, o := range objs {
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

func tm(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func ptr[T any](v T) *T { return &v }

// containerName is the name of the app's container in its pods.
const containerName = "server"

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func setQ(l corev1.ResourceList, name corev1.ResourceName, q string) {
	if q != "" {
		l[name] = resource.MustParse(q)
	}
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// setProbes gives the container the probes p declares; their port is
// the gRPC port unless p names one.
func setProbes(c *corev1.Container, p Probes, grpcPort int32, tls bool) {
	port := grpcPort
	if p.Port != nil {
		port = *p.Port
	}
	var h corev1.ProbeHandler
	switch p.Type {
	case ProbeNone:
		return
	case ProbeKuberpc, ProbeGRPC:
		h.GRPC = &corev1.GRPCAction{Port: port}
	case ProbeTCP:
		h.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}
	case ProbeHTTP:
		h.HTTPGet = &corev1.HTTPGetAction{Path: p.Path, Port: intstr.FromInt32(port)}
	case ProbeExec:
		h.Exec = &corev1.ExecAction{Command: p.Command}
	}
	c.StartupProbe = &corev1.Probe{ProbeHandler: h, PeriodSeconds: 1, FailureThreshold: 30}
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: h, PeriodSeconds: 2, FailureThreshold: 1}
	c.LivenessProbe = &corev1.Probe{ProbeHandler: h, PeriodSeconds: 10, FailureThreshold: 3}
	if p.Type == ProbeKuberpc && tls {
		// The kubelet's gRPC probe speaks no TLS: /readyz on the metrics
		// port reports the same serving status.
		ready := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("metrics")}}
		c.StartupProbe.ProbeHandler, c.ReadinessProbe.ProbeHandler = ready, ready
	}
	if p.Type == ProbeKuberpc {
		// The runtime's liveness is /healthz, which stays up while the
		// server drains, so that a draining pod is not killed early.
		c.LivenessProbe.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("metrics")}}
	}
}

// secure sets up app.Security on the Deployment: the workload certificate
// volume, the runtime's settings, the token reviewer's ServiceAccount
// token and RBAC, and the NetworkPolicy from the rules' callers. It
// returns the objects it adds.
func secure(app App, meta func(string) metav1.ObjectMeta, deploy *appsv1.Deployment, serverSA *corev1.ServiceAccount, netpol *networkingv1.NetworkPolicy) []Object {
	sec := app.Security
	if sec == nil {
		return nil
	}
	pod := &deploy.Spec.Template.Spec
	c := &pod.Containers[0]
	var objs []Object
	if sec.tls() {
		pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: SPIFFEDriver, ReadOnly: ptr(true)}}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "tls", MountPath: TLSDir, ReadOnly: true})
		c.Env = append(c.Env, corev1.EnvVar{Name: "TLS_DIR", Value: TLSDir})
	}
	if sec.MutualTLS {
		c.Env = append(c.Env, corev1.EnvVar{Name: "TLS_CLIENT_AUTH", Value: "require"})
	}
	if sec.TokenAudience != "" {
		c.Env = append(c.Env, corev1.EnvVar{Name: "AUTH_AUDIENCE", Value: sec.TokenAudience})
		// The server reviews tokens with its own ServiceAccount's token.
		serverSA.AutomountServiceAccountToken = nil
		pod.AutomountServiceAccountToken = ptr(true)
		crb := &rbacv1.ClusterRoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: meta(app.Namespace + "-" + app.Name + "-tokenreview"),
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: serverSA.Name, Namespace: app.Namespace}}}
		crb.Namespace = ""
		crb.Labels[NamespaceLabel] = app.Namespace
		objs = append(objs, crb)
	}
	if len(sec.Rules) > 0 {
		policy, _ := json.Marshal(security.Policy{Rules: sec.Rules})
		c.Env = append(c.Env, corev1.EnvVar{Name: "AUTHZ_POLICY_INLINE", Value: string(policy)})
		namespaces, anyNS := security.Policy{Rules: sec.Rules}.Namespaces()
		var from []networkingv1.NetworkPolicyPeer
		if anyNS {
			from = []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}
		} else {
			for _, ns := range namespaces {
				from = append(from, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}})
			}
		}
		netpol.Spec.Ingress[0].From = from
	}
	return objs
}
