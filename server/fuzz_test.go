package server_test

import (
	"strings"
	"testing"

	"github.com/kuberpc/kuberpc/server"
)

// FuzzLoadConfig: any environment is loaded or refused naming the
// setting, never a panic; what loads validates.
func FuzzLoadConfig(f *testing.F) {
	f.Add("PORT", "0", "DRAIN_DELAY", "2s")
	f.Add("MAX_CONNECTION_AGE_GRACE", "forever", "KEEPALIVE_TIME", "0")
	f.Add("MAX_HEADER_LIST_SIZE", "99999999999", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1")
	f.Add("LOG_LEVEL", "debug+3", "MAX_CONCURRENT_STREAMS", "-1")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		env := map[string]string{k1: v1, k2: v2}
		cfg, err := server.LoadConfig(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			if !strings.Contains(err.Error(), "invalid ") {
				t.Fatalf("error does not name the setting: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("LoadConfig accepted %v but Validate says %v", env, err)
		}
	})
}
