package strictdecode

import (
	"strings"
	"testing"
)

type inner struct {
	CPU string `json:"cpu,omitempty"`
}

type embedded struct {
	Shared int `json:"shared"`
}

type doc struct {
	embedded
	Replicas *int32           `json:"replicas,omitempty"`
	Inner    inner            `json:"inner"`
	List     []inner          `json:"list"`
	ByName   map[string]inner `json:"byName"`
	Skipped  int              `json:"-"`
}

func TestJSON(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{`{"replicas":2,"inner":{"cpu":"1"}}`, ""},
		{`{"replicas":2,"Replicas":3}`, `unknown field "Replicas"`},
		{`{"REPLICAS":2}`, `unknown field "REPLICAS"`},
		{`{"replicas":2,"replicas":3}`, `duplicate field "replicas"`},
		{`{"inner":{"CPU":"1"}}`, `unknown field "inner.CPU"`},
		{`{"replicas":2} {}`, `invalid character '{' after top-level value`},
		{`{"replicas":"2"}`, `cannot unmarshal string`},
	} {
		var d doc
		err := JSON([]byte(tc.in), &d)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("JSON(%s) = %v, want an error saying %q", tc.in, err, tc.err)
		}
	}
}

func TestYAML(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"replicas: 2\nshared: 1\ninner: {cpu: 1}\nlist: [{cpu: 2}]\nbyName: {Any: {cpu: 3}}\n", ""},
		{"replicas: 2\nReplicas: 3\n", `unknown field "Replicas": field names are case-sensitive, did you mean "replicas"?`},
		{"REPLICAS: 2\n", `unknown field "REPLICAS"`},
		{"Shared: 2\n", `did you mean "shared"?`},
		{"inner: {Cpu: 1}\n", `unknown field "inner.Cpu"`},
		{"list: [{cpu: 1}, {CPU: 1}]\n", `unknown field "list[1].CPU"`},
		{"byName: {a: {Cpu: 1}}\n", `unknown field "byName.a.Cpu"`},
		{"replicas: 2\nreplicas: 3\n", `already set in map`},
		{"replica: 2\n", `unknown field "replica"`},
		{"Skipped: 1\n", `unknown field "Skipped"`},
	} {
		var d doc
		err := YAML([]byte(tc.in), &d)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("YAML(%q) = %v, want an error saying %q", tc.in, err, tc.err)
		}
	}
	var d doc
	if err := YAML([]byte("inner: {cpu: 1}\n"), &d); err != nil || d.Inner.CPU != "1" {
		t.Errorf("cpu: 1 into a string field: %+v, %v; want \"1\"", d.Inner, err)
	}
}
