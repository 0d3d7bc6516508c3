package kubernetes

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Target is a parsed kubernetes:/// target.
type Target struct {
	Service   string
	Namespace string // empty: the client's own namespace
	PortName  string // set when the port is a name
	Port      int32  // set when the port is a number
}

// String formats t as a target's endpoint: name[.namespace]:port.
func (t Target) String() string {
	p := t.PortName
	if p == "" {
		p = strconv.Itoa(int(t.Port))
	}
	if t.Namespace == "" {
		return t.Service + ":" + p
	}
	return t.Service + "." + t.Namespace + ":" + p
}

// ParseTarget parses the endpoint part of kubernetes:///name[.namespace]:port.
func ParseTarget(endpoint string) (Target, error) {
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("kubernetes resolver: target %q: %s; want kubernetes:///name.namespace:port", endpoint, why)
	}
	host, port, ok := strings.Cut(strings.TrimPrefix(endpoint, "/"), ":")
	if !ok || port == "" {
		return bad("no port")
	}
	var t Target
	t.Service, t.Namespace, _ = strings.Cut(host, ".")
	if strings.HasSuffix(t.Namespace, ".svc") || strings.Contains(t.Namespace, ".svc.") {
		t.Namespace, _, _ = strings.Cut(t.Namespace, ".")
	}
	if errs := validation.IsDNS1035Label(t.Service); len(errs) > 0 {
		return bad("service name " + strconv.Quote(t.Service) + ": " + strings.Join(errs, "; "))
	}
	if t.Namespace != "" {
		if errs := validation.IsDNS1123Label(t.Namespace); len(errs) > 0 {
			return bad("namespace " + strconv.Quote(t.Namespace) + ": " + strings.Join(errs, "; "))
		}
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 1 || n > 65535 {
			return bad("port " + port + " out of range 1-65535")
		}
		t.Port = int32(n)
	} else {
		if errs := validation.IsValidPortName(port); len(errs) > 0 {
			return bad("port name " + strconv.Quote(port) + ": " + strings.Join(errs, "; "))
		}
		t.PortName = port
	}
	return t, nil
}

// ownNamespace is the namespace of the pod the client runs in, or
// "default" outside a cluster.
func ownNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "default"
}
