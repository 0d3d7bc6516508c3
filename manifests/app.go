// Package manifests turns an App (the kuberpc.yaml of a service) into the
// typed Kubernetes objects that run it well: a Deployment with native gRPC
// probes and drain-derived termination settings, Services, a
// PodDisruptionBudget, an optional HorizontalPodAutoscaler, a
// NetworkPolicy, and ServiceAccounts with least-privilege RBAC for the
// server and for its clients.
package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kuberpc/kuberpc/internal/strictdecode"
	"github.com/kuberpc/kuberpc/security"
)

// App is kuberpc.yaml: what a service is and how it should run. Pointer
// fields are optional; Defaults fills them.
type App struct {
	// Name of the service: the Deployment, Service and labels. DNS-1035.
	Name string `json:"name"`
	// Namespace to deploy into. Default "default".
	Namespace string `json:"namespace,omitempty"`
	// Image runs the server, e.g. kuberpc.local/greeter:v1.
	Image string `json:"image"`
	// Replicas when not autoscaled. Default 3.
	Replicas *int32 `json:"replicas,omitempty"`
	// Ports the server listens on.
	Ports Ports `json:"ports,omitempty"`
	// Resources of the server container.
	Resources Resources `json:"resources,omitempty"`
	// Drain is the graceful-shutdown policy (the server runtime's
	// DRAIN_DELAY and DRAIN_TIMEOUT).
	Drain Drain `json:"drain,omitempty"`
	// Probes say how the cluster checks the server; the default suits
	// kuberpc's runtime, and the other types servers that are not
	// kuberpc's (with no grpc.health.v1 or no /healthz).
	Probes Probes `json:"probes,omitempty"`
	// Autoscaling adds a HorizontalPodAutoscaler when set.
	Autoscaling *Autoscaling `json:"autoscaling,omitempty"`
	// Callers are the pods allowed to call the service (NetworkPolicy);
	// empty allows every pod in the namespace.
	Callers []Caller `json:"callers,omitempty"`
	// PriorityClassName for the pods, optional.
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// Env adds environment variables to the server. A variable kuberpc
	// sets itself (PORT, METRICS_PORT, DRAIN_DELAY, DRAIN_TIMEOUT, POD_NAME,
	// POD_NAMESPACE, POD_IP) is an error unless EnvOverride names it: the
	// manifests would otherwise disagree with the server about it.
	Env map[string]string `json:"env,omitempty"`
	// EnvOverride names the variables of Env that replace kuberpc's own.
	EnvOverride []string `json:"envOverride,omitempty"`
	// Security turns on TLS, caller identity and per-method
	// authorization; off when absent.
	Security *Security `json:"security,omitempty"`
}

// Security is kuberpc.yaml's security section: what the server runtime's
// Security settings (package server) are set to, with what the pods need
// for them.
type Security struct {
	// TLS serves TLS with the pod's workload certificate: a CSI volume of
	// cert-manager's csi-driver-spiffe (which the local cluster's node
	// agent also serves) mounted at TLSDir. Its only name is the pod's
	// SPIFFE ID, so clients check the server's identity
	// (security.TLSConfig.ServerIdentity), not a host name.
	TLS bool `json:"tls,omitempty"`
	// MutualTLS requires callers to present their own workload
	// certificate, whose identity the policy then checks. It implies TLS.
	MutualTLS bool `json:"mutualTLS,omitempty"`
	// TokenAudience accepts callers' projected ServiceAccount tokens for
	// this audience, reviewed with the TokenReview API (the server's
	// ServiceAccount is bound to system:auth-delegator for it). It implies
	// TLS.
	TokenAudience string `json:"tokenAudience,omitempty"`
	// Rules are the authorization policy (security.Policy): a call is
	// allowed only when a rule names its method and its caller. The
	// NetworkPolicy admits the namespaces the rules name callers in, so
	// the two never disagree; callers may not be declared as well.
	Rules []security.Rule `json:"rules,omitempty"`
}

// TLSDir is where the pod's workload certificate is mounted.
const TLSDir = "/var/run/secrets/kuberpc.dev/tls"

// SPIFFEDriver is the CSI driver of cert-manager's csi-driver-spiffe,
// which issues the pod's workload certificate.
const SPIFFEDriver = "spiffe.csi.cert-manager.io"

// tls reports whether the server serves TLS.
func (s *Security) tls() bool {
	return s != nil && (s.TLS || s.MutualTLS || s.TokenAudience != "")
}

// MaxDrain bounds each drain duration, and MaxGracePeriod the
// terminationGracePeriodSeconds they add up to.
const (
	MaxDrain       = time.Hour
	MaxGracePeriod = 2 * time.Hour
)

// MaxFileSize is the largest kuberpc.yaml Parse reads.
const MaxFileSize = 1 << 20

// RuntimeEnv are the variables the manifests set for the server runtime.
var RuntimeEnv = []string{"PORT", "METRICS_PORT", "DRAIN_DELAY", "DRAIN_TIMEOUT", "POD_NAME", "POD_NAMESPACE", "POD_IP",
	"MEMORY_LIMIT", "TLS_DIR", "TLS_CLIENT_AUTH", "AUTH_AUDIENCE", "AUTHZ_POLICY", "AUTHZ_POLICY_INLINE"}

// Ports are the server's ports.
type Ports struct {
	// GRPC port. Default 50051.
	GRPC *int32 `json:"grpc,omitempty"`
	// Metrics port (/metrics, /healthz, /readyz). Default 9090.
	Metrics *int32 `json:"metrics,omitempty"`
}

// Resources are the container's requests and limits, as quantities.
type Resources struct {
	CPURequest    string `json:"cpuRequest,omitempty"`
	MemoryRequest string `json:"memoryRequest,omitempty"`
	CPULimit      string `json:"cpuLimit,omitempty"`
	MemoryLimit   string `json:"memoryLimit,omitempty"`
}

// Drain mirrors server.Drain, in Go duration strings.
type Drain struct {
	// PropagationDelay: how long the server keeps serving after turning
	// NOT_SERVING. Default 5s.
	PropagationDelay string `json:"propagationDelay,omitempty"`
	// Timeout: the hard deadline for in-flight RPCs. Default 20s.
	Timeout string `json:"timeout,omitempty"`
	// PreStopSleep adds a preStop sleep before SIGTERM, for servers that
	// do not delay their own shutdown. Default none: the kuberpc runtime
	// (and the Python example) wait PropagationDelay themselves.
	PreStopSleep string `json:"preStopSleep,omitempty"`
}

// The probe types of Probes.Type.
const (
	// ProbeKuberpc is the default, for the kuberpc runtime: startup and
	// readiness on grpc.health.v1, liveness on /healthz of the metrics
	// port (up while the server drains).
	ProbeKuberpc = "kuberpc"
	// ProbeGRPC probes grpc.health.v1 on Port for startup, readiness and
	// liveness.
	ProbeGRPC = "grpc"
	// ProbeTCP probes that Port accepts connections.
	ProbeTCP = "tcp"
	// ProbeHTTP probes an HTTP GET of Path on Port (2xx or 3xx).
	ProbeHTTP = "http"
	// ProbeExec runs Command in the container (exit 0).
	ProbeExec = "exec"
	// ProbeNone sets no probe: the pod is Ready once its process runs.
	ProbeNone = "none"
)

// ProbeTypes are the values Probes.Type takes.
var ProbeTypes = []string{ProbeKuberpc, ProbeGRPC, ProbeTCP, ProbeHTTP, ProbeExec, ProbeNone}

// Probes are the server's startup, readiness and liveness probes.
type Probes struct {
	// Type is one of ProbeTypes. Default "kuberpc".
	Type string `json:"type,omitempty"`
	// Port of grpc, tcp and http probes. Default the gRPC port.
	Port *int32 `json:"port,omitempty"`
	// Path of http probes. Default "/".
	Path string `json:"path,omitempty"`
	// Command of exec probes.
	Command []string `json:"command,omitempty"`
}

// Autoscaling configures the HorizontalPodAutoscaler.
type Autoscaling struct {
	MinReplicas int32 `json:"minReplicas"`
	MaxReplicas int32 `json:"maxReplicas"`
	// CPUUtilization is the target average CPU, percent of requests.
	// Default 70.
	CPUUtilization *int32 `json:"cpuUtilization,omitempty"`
	// RequestsPerSecond, when set, also scales on the per-pod request rate
	// (the custom metric RequestsPerSecondMetric, which kuberpc's metrics
	// adapter serves).
	RequestsPerSecond *int32 `json:"requestsPerSecond,omitempty"`
	// ScaleDownStabilization is how long the HPA waits, after the load
	// fell, before it removes replicas (a Go duration). Default 5m, the
	// HPA's own.
	ScaleDownStabilization string `json:"scaleDownStabilization,omitempty"`
}

// minMemory is the least memory request or limit kuberpc.yaml accepts:
// below it no server starts, and such a value is nearly always a unit
// mistaken (100m is a tenth of a byte).
var minMemory = resource.MustParse("4Mi")

// RequestsPerSecondMetric is the Pods metric the HPA names for
// RequestsPerSecond: kuberpc's metrics adapter serves it under this name
// (metricsadapter.MetricRequestsPerSecond; a test pins the two).
const RequestsPerSecondMetric = "grpc_server_requests_per_second"

// Caller selects pods allowed to call the service.
type Caller struct {
	// PodLabels select the calling pods.
	PodLabels map[string]string `json:"podLabels"`
	// Namespace of the callers; default the service's.
	Namespace string `json:"namespace,omitempty"`
}

func i32(v int32) *int32 { return &v }

// Defaults returns a with every optional field filled.
func (a App) Defaults() App {
	if a.Namespace == "" {
		a.Namespace = "default"
	}
	if a.Replicas == nil {
		a.Replicas = i32(3)
	}
	if a.Ports.GRPC == nil {
		a.Ports.GRPC = i32(50051)
	}
	if a.Ports.Metrics == nil {
		a.Ports.Metrics = i32(9090)
	}
	r := &a.Resources
	for _, f := range []struct {
		p *string
		d string
	}{{&r.CPURequest, "100m"}, {&r.MemoryRequest, "64Mi"}, {&r.MemoryLimit, "256Mi"}} {
		if *f.p == "" {
			*f.p = f.d
		}
	}
	if a.Probes.Type == "" {
		a.Probes.Type = ProbeKuberpc
	}
	if a.Probes.Type == ProbeHTTP && a.Probes.Path == "" {
		a.Probes.Path = "/"
	}
	if a.Drain.PropagationDelay == "" {
		a.Drain.PropagationDelay = "5s"
	}
	if a.Drain.Timeout == "" {
		a.Drain.Timeout = "20s"
	}
	if a.Autoscaling != nil {
		as := *a.Autoscaling
		if as.CPUUtilization == nil {
			as.CPUUtilization = i32(70)
		}
		if as.ScaleDownStabilization == "" {
			as.ScaleDownStabilization = "5m"
		}
		a.Autoscaling = &as
	}
	return a
}

// Validate reports every problem in a (after Defaults), each naming the
// field.
func (a App) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if msgs := validation.IsDNS1035Label(a.Name); len(msgs) > 0 {
		bad("name", "%q is not a valid name (lower-case letters, digits and '-', starting with a letter, at most 63): %s", a.Name, msgs[0])
	}
	if msgs := validation.IsDNS1123Label(a.Namespace); len(msgs) > 0 {
		bad("namespace", "%q: %s", a.Namespace, msgs[0])
	}
	if a.Image == "" {
		bad("image", "required, e.g. kuberpc.local/%s:v1", a.Name)
	}
	if sec := a.Security; sec != nil {
		if aud := sec.TokenAudience; aud != "" && (strings.ContainsAny(aud, " \t\n,") || len(aud) > 253) {
			bad("security.tokenAudience", "%q: one audience, no spaces or commas, at most 253 characters", aud)
		}
		if len(sec.Rules) > 0 {
			if _, err := security.NewAuthorizer(security.Policy{Rules: sec.Rules}); err != nil {
				bad("security.rules", "%v", strings.TrimPrefix(err.Error(), "authorization policy: "))
			}
			if !sec.MutualTLS && sec.TokenAudience == "" {
				bad("security.rules", "no caller can be identified: set mutualTLS: true or a tokenAudience (else every call but health checks fails UNAUTHENTICATED)")
			}
			if len(a.Callers) > 0 {
				bad("callers", "declare callers once: security.rules name them by identity, and the NetworkPolicy is derived from them")
			}
		}
		if sec.tls() && a.Probes.Type == ProbeGRPC {
			bad("probes.type", "grpc cannot probe a TLS server (the kubelet's gRPC probe has no TLS); use kuberpc, which probes /readyz on the metrics port when TLS is on")
		}
	}
	if a.Replicas != nil && *a.Replicas < 0 {
		bad("replicas", "%d is negative", *a.Replicas)
	}
	for name, p := range map[string]*int32{"ports.grpc": a.Ports.GRPC, "ports.metrics": a.Ports.Metrics} {
		if p != nil && (*p < 1 || *p > 65535) {
			bad(name, "%d out of range 1-65535", *p)
		}
	}
	if a.Ports.GRPC != nil && a.Ports.Metrics != nil && *a.Ports.GRPC == *a.Ports.Metrics {
		bad("ports.metrics", "%d is also ports.grpc", *a.Ports.Metrics)
	}
	quantities := map[string]*resource.Quantity{}
	for _, f := range []struct{ field, q string }{
		{"resources.cpuRequest", a.Resources.CPURequest}, {"resources.memoryRequest", a.Resources.MemoryRequest},
		{"resources.cpuLimit", a.Resources.CPULimit}, {"resources.memoryLimit", a.Resources.MemoryLimit},
	} {
		if f.q == "" {
			continue
		}
		q, err := resource.ParseQuantity(f.q)
		switch {
		case err != nil:
			bad(f.field, "%q is not a quantity (e.g. 100m, 1, 256Mi)", f.q)
		case q.Sign() <= 0:
			bad(f.field, "%q must be positive", f.q)
		case strings.HasPrefix(f.field, "resources.memory") && q.Cmp(minMemory) < 0:
			hint := ""
			if strings.HasSuffix(f.q, "m") {
				hint = fmt.Sprintf(" (m means thousandths of a byte: did you mean %si?)", strings.TrimSuffix(f.q, "m")+"M")
			}
			bad(f.field, "%s is under %s, too little for any server to start%s", f.q, &minMemory, hint)
		default:
			quantities[f.field] = &q
		}
	}
	for _, pair := range [][2]string{{"resources.cpuRequest", "resources.cpuLimit"}, {"resources.memoryRequest", "resources.memoryLimit"}} {
		if req, lim := quantities[pair[0]], quantities[pair[1]]; req != nil && lim != nil && req.Cmp(*lim) > 0 {
			bad(pair[0], "%s is above %s %s", req, pair[1], lim)
		}
	}
	var total time.Duration
	durOK := true
	for _, f := range []struct{ field, d string }{
		{"drain.propagationDelay", a.Drain.PropagationDelay}, {"drain.timeout", a.Drain.Timeout}, {"drain.preStopSleep", a.Drain.PreStopSleep},
	} {
		if f.d == "" {
			continue
		}
		v, err := time.ParseDuration(f.d)
		switch {
		case err != nil || v < 0:
			bad(f.field, "%q is not a non-negative duration (e.g. 5s)", f.d)
			durOK = false
		case v > MaxDrain:
			bad(f.field, "%s is above the limit of %s", f.d, MaxDrain)
			durOK = false
		default:
			total += v
		}
	}
	if durOK && total+5*time.Second > MaxGracePeriod {
		bad("drain", "propagationDelay + timeout + preStopSleep + 5s = %s, above the %s a pod's terminationGracePeriodSeconds may reasonably be", total+5*time.Second, MaxGracePeriod)
	}
	if a.PriorityClassName != "" {
		if msgs := validation.IsDNS1123Subdomain(a.PriorityClassName); len(msgs) > 0 {
			bad("priorityClassName", "%q: %s", a.PriorityClassName, msgs[0])
		}
	}
	if as := a.Autoscaling; as != nil {
		if as.MinReplicas < 1 {
			bad("autoscaling.minReplicas", "%d, want at least 1", as.MinReplicas)
		}
		if as.MaxReplicas < as.MinReplicas {
			bad("autoscaling.maxReplicas", "%d is below minReplicas %d", as.MaxReplicas, as.MinReplicas)
		}
		if as.CPUUtilization != nil && (*as.CPUUtilization < 1 || *as.CPUUtilization > 100) {
			bad("autoscaling.cpuUtilization", "%d, want 1-100 (percent of the CPU request)", *as.CPUUtilization)
		}
		if as.RequestsPerSecond != nil && *as.RequestsPerSecond < 1 {
			bad("autoscaling.requestsPerSecond", "%d, want at least 1", *as.RequestsPerSecond)
		}
		if d, err := time.ParseDuration(as.ScaleDownStabilization); err != nil || d < 0 || d > time.Hour || d%time.Second != 0 {
			bad("autoscaling.scaleDownStabilization", "%q, want whole seconds from 0s to 1h (e.g. 5m)", as.ScaleDownStabilization)
		}
	}
	for i, c := range a.Callers {
		if len(c.PodLabels) == 0 {
			bad(fmt.Sprintf("callers[%d].podLabels", i), "required")
		}
		// A name no namespace can have would admit no caller, silently.
		if msgs := validation.IsDNS1123Label(c.Namespace); c.Namespace != "" && len(msgs) > 0 {
			bad(fmt.Sprintf("callers[%d].namespace", i), "%q: %s", c.Namespace, msgs[0])
		}
		for k, v := range c.PodLabels {
			if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
				bad(fmt.Sprintf("callers[%d].podLabels", i), "key %q: %s", k, msgs[0])
			}
			if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
				bad(fmt.Sprintf("callers[%d].podLabels", i), "value %q: %s", v, msgs[0])
			}
		}
	}
	pr := a.Probes
	switch {
	case !slices.Contains(ProbeTypes, pr.Type):
		bad("probes.type", "%q, want one of %s", pr.Type, strings.Join(ProbeTypes, ", "))
	case pr.Type == ProbeExec && len(pr.Command) == 0:
		bad("probes.command", "required for exec probes")
	case pr.Type != ProbeExec && len(pr.Command) > 0:
		bad("probes.command", "only for exec probes (type is %s)", pr.Type)
	case pr.Type == ProbeHTTP && !strings.HasPrefix(pr.Path, "/"):
		bad("probes.path", "%q must start with /", pr.Path)
	case pr.Type != ProbeHTTP && pr.Path != "":
		bad("probes.path", "only for http probes (type is %s)", pr.Type)
	}
	if p := pr.Port; p != nil && (*p < 1 || *p > 65535) {
		bad("probes.port", "%d out of range 1-65535", *p)
	}
	for _, k := range sortedKeys(a.Env) {
		if msgs := validation.IsEnvVarName(k); len(msgs) > 0 {
			bad("env", "%q: %s", k, msgs[0])
		}
		if slices.Contains(RuntimeEnv, k) && !slices.Contains(a.EnvOverride, k) {
			bad("env."+k, "kuberpc sets %s itself (from ports, drain or the downward API); list it in envOverride to replace it", k)
		}
	}
	for _, k := range a.EnvOverride {
		if _, ok := a.Env[k]; !ok {
			bad("envOverride", "%q has no value in env", k)
		}
	}
	return errors.Join(errs...)
}

// Parse decodes kuberpc.yaml strictly (an unknown field, a key given
// twice or one in another case than the field's, such as Replicas, is an
// error naming it, as the API server's strict field validation does),
// applies defaults and validates.
func Parse(data []byte) (App, error) {
	var a App
	if len(data) > MaxFileSize {
		return a, fmt.Errorf("%d bytes, above the limit of %d for a kuberpc.yaml", len(data), MaxFileSize)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return a, errors.New("empty file: want at least name and image")
	}
	if n := documents(data); n > 1 {
		return a, fmt.Errorf("%d YAML documents; a kuberpc.yaml describes one service (remove the --- separators)", n)
	}
	if err := strictdecode.YAML(data, &a); err != nil {
		return a, err
	}
	a = a.Defaults()
	return a, a.Validate()
}

// Load reads and parses the kuberpc.yaml at path.
func Load(path string) (App, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return App{}, err
	}
	a, err := Parse(b)
	if err != nil {
		return App{}, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// documents counts the non-empty YAML documents in data.
func documents(data []byte) int {
	n := 0
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1) {
		for _, line := range strings.Split(doc, "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				n++
				break
			}
		}
	}
	return n
}
