package childpolicy

import (
	"encoding/json"
	"strings"
	"testing"

	_ "google.golang.org/grpc/balancer/roundrobin"
	_ "google.golang.org/grpc/balancer/weightedroundrobin"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		js, name, err string
	}{
		{`[{"round_robin":{}}]`, "round_robin", ""},
		{`[{"nope":{}},{"round_robin":{}}]`, "round_robin", ""},
		{`[]`, "", "childPolicy: missing"},
		{`null`, "", "childPolicy: missing"},
		{`[{"nope":{}}]`, "", `among ["nope"]`},
		{`[{"weighted_round_robin":{"blackoutPeriod":"x"}}]`, "weighted_round_robin", "childPolicy weighted_round_robin:"},
		{`[{"round_robin":{},"weighted_round_robin":{}}]`, "", "childPolicy[0]: 2 policies in one entry, want one"},
		{`[{"round_robin":{}},{}]`, "", "childPolicy[1]: 0 policies in one entry"},
	} {
		var list []map[string]json.RawMessage
		if err := json.Unmarshal([]byte(tc.js), &list); err != nil {
			t.Fatal(err)
		}
		name, _, err := Parse(list)
		if name != tc.name || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Parse(%s) = %q, %v; want %q and an error saying %q", tc.js, name, err, tc.name, tc.err)
		}
	}
}
