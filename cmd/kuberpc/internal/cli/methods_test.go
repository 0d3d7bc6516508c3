package cli

import (
	"errors"
	"fmt"
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
