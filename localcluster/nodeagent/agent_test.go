package nodeagent

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestRunFlagsRotateLogs: the log rotation flags take the kubelet's
// forms, default to its values, and name a value that cannot rotate.
func TestRunFlagsRotateLogs(t *testing.T) {
	cfg, err := parseRunFlags(nil, nil, io.Discard)
	if err != nil || cfg.ContainerLogMaxSize != 10<<20 || cfg.ContainerLogMaxFiles != 5 {
		t.Errorf("defaults: %d bytes, %d files, %v; want the kubelet's 10Mi and 5", cfg.ContainerLogMaxSize, cfg.ContainerLogMaxFiles, err)
	}
	cfg, err = parseRunFlags(nil, []string{"--container-log-max-size=1.5Mi", "--container-log-max-files=2"}, io.Discard)
	if err != nil || cfg.ContainerLogMaxSize != 1536<<10 || cfg.ContainerLogMaxFiles != 2 {
		t.Errorf("1.5Mi and 2: %d bytes, %d files, %v", cfg.ContainerLogMaxSize, cfg.ContainerLogMaxFiles, err)
	}
	for _, c := range []struct{ arg, want string }{
		{"--container-log-max-size=0", "container-log-max-size: 0: must be positive"},
		{"--container-log-max-size=-1Mi", "must be positive"},
		{"--container-log-max-size=ten", "container-log-max-size: quantities must match"},
		{"--container-log-max-files=1", "container-log-max-files: 1: must be at least 2"},
		{"--container-log-max-files=0", "must be at least 2"},
	} {
		var out strings.Builder
		_, err := parseRunFlags(nil, []string{c.arg}, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error saying %q", c.arg, err, c.want)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("%s: printed %q; want it to say %q", c.arg, out.String(), c.want)
		}
	}
}

// TestRunRefusesLogRotationItCannotDo: a Config whose rotation cannot
// work is refused before anything starts.
func TestRunRefusesLogRotationItCannotDo(t *testing.T) {
	for _, cfg := range []Config{{ContainerLogMaxSize: -1}, {ContainerLogMaxFiles: 1}} {
		err := Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "container log rotation") {
			t.Errorf("Run(%+v) = %v; want the rotation settings named", cfg, err)
		}
	}
}
