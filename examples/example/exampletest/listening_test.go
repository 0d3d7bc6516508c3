package exampletest_test

import (
	"testing"

	"github.com/kuberpc/kuberpc/examples/example/exampletest"
)

func TestListening(t *testing.T) {
	for _, tc := range []struct {
		line          string
		port, metrics int
		ok            bool
	}{
		{"example listening on :50051, metrics on :9090", 50051, 9090, true},
		{"example listening on :41234", 41234, -1, true},
		{"draining: health NOT_SERVING", 0, 0, false},
		{"example listening on :", 0, 0, false},
		{"example listening on :0", 0, 0, false},
		{"example listening on :70000", 0, 0, false},
		{"example listening on :50051, metrics on :x", 0, 0, false},
		{"example listening on :50051 extra", 0, 0, false},
	} {
		port, metrics, ok := exampletest.Listening(tc.line)
		if port != tc.port || metrics != tc.metrics || ok != tc.ok {
			t.Errorf("Listening(%q) = %d, %d, %v; want %d, %d, %v", tc.line, port, metrics, ok, tc.port, tc.metrics, tc.ok)
		}
	}
}
