package server_test

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/kuberpc/kuberpc/server"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	cfg, err := server.LoadConfig([]string{"--drain-timeout=7s", "--max-in-flight", "50"}, env(map[string]string{
		"PORT": "8080", "POD_NAME": "example-abc", "POD_IP": "198.18.0.7", "DRAIN_TIMEOUT": "1s", "LOG_LEVEL": "warn",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 8080 || cfg.PodName != "example-abc" || cfg.PodIP != "198.18.0.7" {
		t.Errorf("env not applied: %+v", cfg)
	}
	if cfg.Drain.Timeout != 7*time.Second {
		t.Errorf("Drain.Timeout = %v, want the flag's 7s over the env's 1s", cfg.Drain.Timeout)
	}
	if cfg.Limits.MaxInFlight != 50 || cfg.LogLevel.Level().String() != "WARN" {
		t.Errorf("flags/env not applied: %+v", cfg)
	}
	if cfg.MetricsPort != 9090 || cfg.Drain.PropagationDelay != 5*time.Second {
		t.Errorf("defaults not kept: %+v", cfg)
	}
	if got, want := cfg.Drain.TerminationGracePeriod(), 17*time.Second; got != want {
		t.Errorf("TerminationGracePeriod = %v, want %v", got, want)
	}
}

// TestLoadConfigOverloadSettings: adaptive shedding and the stalled-write
// timeout are on by default, and each can be turned off.
func TestLoadConfigOverloadSettings(t *testing.T) {
	t.Parallel()
	def, err := server.LoadConfig(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !def.Limits.AdaptiveShedding || def.Limits.StalledWriteTimeout != 30*time.Second {
		t.Errorf("defaults: adaptive %v, stalled-write timeout %v; want true, 30s", def.Limits.AdaptiveShedding, def.Limits.StalledWriteTimeout)
	}
	if def.Limits.MethodLimits != nil {
		t.Errorf("default method limits %v, want none", def.Limits.MethodLimits)
	}
	ml, err := server.LoadConfig(nil, env(map[string]string{"METHOD_LIMITS": " example.ExampleService/SayHello=3, /example.StreamService/Chat=0 ,"}))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"/example.ExampleService/SayHello": 3, "/example.StreamService/Chat": 0}; !maps.Equal(ml.Limits.MethodLimits, want) {
		t.Errorf("METHOD_LIMITS parsed to %v, want %v", ml.Limits.MethodLimits, want)
	}
	off, err := server.LoadConfig(nil, env(map[string]string{"ADAPTIVE_SHEDDING": "false", "STALLED_WRITE_TIMEOUT": "forever"}))
	if err != nil {
		t.Fatal(err)
	}
	if off.Limits.AdaptiveShedding || off.Limits.StalledWriteTimeout != server.Forever {
		t.Errorf("turned off: adaptive %v, stalled-write timeout %v; want false, Forever", off.Limits.AdaptiveShedding, off.Limits.StalledWriteTimeout)
	}
}

func TestLoadConfigErrorsNameTheSetting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"port not a number", nil, map[string]string{"PORT": "http"}, []string{`PORT "http"`, "whole number"}},
		{"port out of range", nil, map[string]string{"PORT": "70000"}, []string{"PORT 70000", "1-65535"}},
		{"port flag negative", []string{"--port=-1"}, nil, []string{"PORT -1"}},
		{"negative drain", nil, map[string]string{"DRAIN_TIMEOUT": "-5s"}, []string{"DRAIN_TIMEOUT -5s", "negative"}},
		{"negative delay flag", []string{"--drain-delay=-1s"}, nil, []string{"DRAIN_DELAY -1s", "negative"}},
		{"bad duration", nil, map[string]string{"DRAIN_DELAY": "5"}, []string{`DRAIN_DELAY "5"`, "duration"}},
		{"bad flag value", []string{"--max-connection-age=soon"}, nil, []string{"--max-connection-age", "duration"}},
		{"unknown flag", []string{"--prot=1"}, nil, []string{"prot"}},
		{"bad level", nil, map[string]string{"LOG_LEVEL": "loud"}, []string{"LOG_LEVEL", "debug, info, warn or error"}},
		{"bad pod ip", nil, map[string]string{"POD_IP": "pod-1"}, []string{"POD_IP", "not an IP"}},
		{"same ports", nil, map[string]string{"PORT": "9090"}, []string{"METRICS_PORT 9090", "differ"}},
		{"negative size", nil, map[string]string{"MAX_RECV_MSG_SIZE": "-1"}, []string{"MAX_RECV_MSG_SIZE -1"}},
		{"zero stall timeout", nil, map[string]string{"STALLED_WRITE_TIMEOUT": "0"}, []string{"STALLED_WRITE_TIMEOUT 0s", "positive", "forever"}},
		{"adaptive not a bool", nil, map[string]string{"ADAPTIVE_SHEDDING": "maybe"}, []string{"ADAPTIVE_SHEDDING", "true or false"}},
		{"method limit not a number", nil, map[string]string{"METHOD_LIMITS": "a.B/C=many"}, []string{"METHOD_LIMITS", `"a.B/C=many"`, "pkg.Service/Method=N"}},
		{"method limit negative", nil, map[string]string{"METHOD_LIMITS": "a.B/C=-1"}, []string{"METHOD_LIMITS /a.B/C=-1", "negative"}},
		{"method limit not a method", nil, map[string]string{"METHOD_LIMITS": "a.B=1"}, []string{"METHOD_LIMITS \"/a.B\"", "full name"}},
		{"method limit twice", nil, map[string]string{"METHOD_LIMITS": "a.B/C=1,/a.B/C=2"}, []string{"METHOD_LIMITS", "/a.B/C is given twice"}},
		{"window below HTTP/2's", nil, map[string]string{"STREAM_WINDOW": "0"}, []string{"STREAM_WINDOW 0", "at least 65536"}},
		{"window not a number", nil, map[string]string{"CONN_WINDOW": "4MiB"}, []string{"CONN_WINDOW", "whole number"}},
		{"window over int32", nil, map[string]string{"STREAM_WINDOW": "4294967296"}, []string{"STREAM_WINDOW", "2147483647"}},
		{"connection window under the stream's", nil, map[string]string{"STREAM_WINDOW": "2097152", "CONN_WINDOW": "1048576"}, []string{"CONN_WINDOW 1048576", "at least STREAM_WINDOW"}},
		{"negative workers", nil, map[string]string{"STREAM_WORKERS": "-1"}, []string{"STREAM_WORKERS -1"}},
		{"no connections", nil, map[string]string{"MAX_CONNECTIONS": "0"}, []string{"MAX_CONNECTIONS 0", "at least 1"}},
		{"memory limit zero", nil, map[string]string{"MEMORY_LIMIT": "0"}, []string{`MEMORY_LIMIT "0"`, "positive", "unset it"}},
		{"memory limit negative", nil, map[string]string{"MEMORY_LIMIT": "-1Gi"}, []string{`MEMORY_LIMIT "-1Gi"`, "positive"}},
		{"memory limit not a quantity", nil, map[string]string{"MEMORY_LIMIT": "lots"}, []string{`MEMORY_LIMIT "lots"`, "256Mi"}},
		{"memory limit a fraction of a byte", nil, map[string]string{"MEMORY_LIMIT": "100m"}, []string{`MEMORY_LIMIT "100m"`, "whole number of bytes"}},
		{"memory limit too large", nil, map[string]string{"MEMORY_LIMIT": "1e30"}, []string{`MEMORY_LIMIT "1e30"`, "at most"}},
		{"memory limit in MiB without the unit", nil, map[string]string{"MEMORY_LIMIT": "256"}, []string{"MEMORY_LIMIT 256", "at least 4Mi", "256Mi"}},
		{"keepalive pings under a second", nil, map[string]string{"KEEPALIVE_TIME": "100ms"}, []string{"KEEPALIVE_TIME 100ms", "at least 1s", "0 for no pings"}},
		{"memory limit field negative", []string{"--memory-limit=-5"}, nil, []string{"--memory-limit", "positive"}},
		{"two errors", nil, map[string]string{"PORT": "x", "DRAIN_TIMEOUT": "-1s"}, []string{"PORT", "DRAIN_TIMEOUT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := server.LoadConfig(tc.args, env(tc.env))
			if err == nil {
				t.Fatal("LoadConfig succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestLoadConfigMemoryLimit: MEMORY_LIMIT is read as the downward API
// gives limits.memory (bytes) and as a manifest writes it (a quantity);
// unset, no limit is known.
func TestLoadConfigMemoryLimit(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]int64{"": 0, "268435456": 256 << 20, "256Mi": 256 << 20, "1G": 1e9, " 1.5Gi ": 3 << 29} {
		e := map[string]string{}
		if v != "" {
			e["MEMORY_LIMIT"] = v
		}
		cfg, err := server.LoadConfig(nil, env(e))
		if err != nil {
			t.Errorf("MEMORY_LIMIT=%q: %v", v, err)
			continue
		}
		if cfg.MemoryLimit != want {
			t.Errorf("MEMORY_LIMIT=%q: MemoryLimit = %d, want %d", v, cfg.MemoryLimit, want)
		}
	}
	if _, err := server.New(server.WithConfig(server.Config{MemoryLimit: -1})); err == nil || !strings.Contains(err.Error(), "MEMORY_LIMIT -1") {
		t.Errorf("New with MemoryLimit -1 = %v, want an error naming MEMORY_LIMIT", err)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	_, err := server.New(server.WithConfig(server.Config{Drain: server.Drain{Timeout: -time.Second}}))
	if err == nil || !strings.Contains(err.Error(), "DRAIN_TIMEOUT") {
		t.Errorf("New with a negative drain timeout = %v, want an error naming DRAIN_TIMEOUT", err)
	}
}
