package nodeagent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// A FailureThreshold of 1 (kuberpc's readiness probe) takes a pod out on
// its first failed probe; it was once raised to 3, so a draining pod
// stayed Ready for two more periods.
func TestThresholds(t *testing.T) {
	for _, tc := range []struct {
		probe            corev1.Probe
		success, failure int32
	}{
		{corev1.Probe{}, 1, 3},
		{corev1.Probe{SuccessThreshold: 1, FailureThreshold: 1}, 1, 1},
		{corev1.Probe{SuccessThreshold: 2, FailureThreshold: 5}, 2, 5},
		{corev1.Probe{SuccessThreshold: -1, FailureThreshold: -4}, 1, 3},
	} {
		s, f := thresholds(&tc.probe)
		if s != tc.success || f != tc.failure {
			t.Errorf("thresholds(success %d, failure %d) = %d, %d; want %d, %d",
				tc.probe.SuccessThreshold, tc.probe.FailureThreshold, s, f, tc.success, tc.failure)
		}
	}
}

// TestHeadWriterKeepsTheStart: the first max bytes are kept, the rest
// only counted, and every write is taken whole (the command never blocks
// on a full pipe).
func TestHeadWriterKeepsTheStart(t *testing.T) {
	w := &headWriter{max: 10}
	for _, p := range []string{"  abc", "defghij", "klm\n"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if got, want := w.String(), "abcdefgh… (6 bytes more)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (&headWriter{max: 10}).String(); got != "" {
		t.Errorf("empty: %q", got)
	}
}
