package outlierdetection

import (
	"encoding/json"
	"testing"
)

// FuzzParseConfig: any config is parsed or refused, never a panic; what
// parses is within bounds.
func FuzzParseConfig(f *testing.F) {
	f.Add(`{"childPolicy":[{"round_robin":{}}]}`)
	f.Add(`{"childPolicy":[{"nope":{}},{"round_robin":{}}],"interval":"1ms","maxEjectionPercent":100,"failurePercentage":{"threshold":0}}`)
	f.Add(`{"childPolicy":[{"round_robin":[]}],"consecutiveFailures":-3}`)
	f.Fuzz(func(t *testing.T, js string) {
		cfg, err := builder{}.ParseConfig(json.RawMessage(js))
		if err != nil {
			return
		}
		c := cfg.(*Config)
		if c.child == "" || c.interval <= 0 || c.base <= 0 || c.maxPercent < 0 || c.maxPercent > 100 || c.consecutive < 0 {
			t.Fatalf("ParseConfig(%s) accepted %+v", js, c)
		}
	})
}
