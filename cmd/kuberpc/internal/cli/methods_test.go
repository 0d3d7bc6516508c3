package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestUnreachableHintsAtPortForward: a call through a kubernetes:///
// target that could not connect, or waited for a connection until its
// deadline, says that --port-forward reaches pods this machine does not;
// other failures, other targets and calls already port-forwarded do not.
func TestUnreachableHintsAtPortForward(t *testing.T) {
	dialFailed := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 198.18.0.5:50051: connect: network is unreachable"`)
	for _, c := range []struct {
		target      string
		portForward bool
		err         error
		hint        bool
	}{
		{"kubernetes:///example.default:grpc", false, dialFailed, true},
		{"kubernetes:///example.default:grpc", false, fmt.Errorf("server reflection: %w", dialFailed), true},
		{"kubernetes:///example.default:grpc", false, status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true},
		{"kubernetes:///example.default:grpc", true, dialFailed, false},
		{"dns:///example:50051", false, dialFailed, false},
		{"kubernetes:///example.default:grpc", false, status.Error(codes.Unavailable, "kuberpc: server overloaded"), false},
		{"kubernetes:///example.default:grpc", false, status.Error(codes.NotFound, "unknown service"), false},
		{"kubernetes:///example.default:grpc", false, errors.New("no Service serves it"), false},
	} {
		m := &methodFlags{portForward: c.portForward}
		got := m.unreachable(c.target, c.err)
		if !errors.Is(got, c.err) {
			t.Errorf("%s, %v: %v no longer wraps the error", c.target, c.err, got)
		}
		if hint := strings.Contains(got.Error(), "--port-forward reaches the pods"); hint != c.hint {
			t.Errorf("unreachable(%s, port-forward %v, %v) = %q; want the hint: %v", c.target, c.portForward, c.err, got, c.hint)
		}
	}
	if (&methodFlags{}).unreachable("kubernetes:///x:1", nil) != nil {
		t.Error("no error became one")
	}
}

// TestGivenTargetTakesTheCLIsNamespace: a kubernetes:/// --target that
// names no namespace is read in the CLI's (-n, else the kubeconfig
// context's), as kubectl reads a name, not in the resolver's default;
// other targets are used as given, and a malformed one is named.
func TestGivenTargetTakesTheCLIsNamespace(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: shop}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ target, n, want string }{
		{"kubernetes:///example:grpc", "", "kubernetes:///example.shop:grpc"},
		{"kubernetes:///example:50051", "blue", "kubernetes:///example.blue:50051"},
		{"kubernetes:///example.green:grpc", "blue", "kubernetes:///example.green:grpc"},
		{"dns:///example:50051", "blue", "dns:///example:50051"},
		{"", "blue", ""},
	} {
		g := &globals{kubeconfig: kubeconfig, namespace: c.n}
		got, err := (&methodFlags{target: c.target}).givenTarget(g)
		if err != nil || got != c.want {
			t.Errorf("--target %q -n %q: %q, %v; want %q", c.target, c.n, got, err, c.want)
		}
	}
	_, err := (&methodFlags{target: "kubernetes:///Example:grpc"}).givenTarget(&globals{kubeconfig: kubeconfig})
	if err == nil || !strings.Contains(err.Error(), `--target: kubernetes resolver: target "Example:grpc": service name "Example"`) {
		t.Errorf("a malformed --target: %v; want it named", err)
	}
}
