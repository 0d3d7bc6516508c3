package cli_test

import (
	"strings"
	"testing"
)

// TestLoadCallsAnyUnaryMethod: load --call drives any unary method with
// the request -d gives, its types from server reflection, and counts
// every outcome as it does SayHello's; a streaming method, a request
// that is not valid and flags that only --call takes are named before
// any call is made. Before, load called SayHello only.
func TestLoadCallsAnyUnaryMethod(t *testing.T) {
	target := serveBothExamples(t)
	for _, c := range []struct {
		args  []string
		fails bool
		want  string
	}{
		{[]string{"--call", "grpc.health.v1.Health/Check", "-d", `{"service":""}`}, false, "unary calls: 20, failed 0"},
		{[]string{"--call", "grpc.health.v1.Health/Check", "-d", `{"service":"no.Such"}`}, true, "unary calls: 20, failed 20 (NotFound=20)"},
		{[]string{"--call", "/example.ExampleService/SayHello", "-d", `{"name":"x"}`}, false, "load on " + target + ": 40 example.ExampleService/SayHello calls/s"},
		{[]string{"--call", "example.StreamService/Chat"}, true, "--call example.StreamService/Chat: a streaming method; load makes unary calls"},
		{[]string{"--call", "grpc.health.v1.Health/Check", "-d", `{"servce":""}`}, true, `-d: not a valid grpc.health.v1.HealthCheckRequest`},
		{[]string{"--call", "grpc.health.v1.Health/Check", "-d", `{}{}`}, true, "grpc.health.v1.Health/Check takes one request; -d holds 2"},
		{[]string{"--call", "grpc.health.v1.Health/Check", "--streams", "2"}, true, "--streams 2: the streams are the reference service's Chat"},
		{[]string{"--call", "Check"}, true, `--call "Check": want package.Service/Method`},
		{[]string{"-d", `{"name":"x"}`}, true, "--data: only with --call"},
	} {
		args := append([]string{"load", "--rate", "40", "--duration", "500ms", "--target", target}, c.args...)
		out, code := runCLI(args...)
		if (code != 0) != c.fails || !strings.Contains(out, c.want) {
			t.Errorf("kuberpc %s: exit %d, %q; want %q", strings.Join(c.args, " "), code, out, c.want)
		}
	}
}
