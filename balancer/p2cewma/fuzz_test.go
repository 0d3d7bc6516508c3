package p2cewma

import (
	"encoding/json"
	"testing"
)

// FuzzParseConfig: any config is parsed or refused, never a panic; what
// parses has a positive decay and a penalty that is not negative.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{`{}`, `{"decay":"5s"}`, `{"failurePenalty":"0s"}`, `{"decay":"-1s"}`, `{"decay":null}`, `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, js string) {
		cfg, err := parseConfig(json.RawMessage(js))
		if err != nil {
			return
		}
		c := cfg.(*Config)
		if c.decay <= 0 || c.penalty < 0 {
			t.Fatalf("parseConfig(%s) accepted decay %v penalty %v", js, c.decay, c.penalty)
		}
	})
}
