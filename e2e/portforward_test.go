package e2e

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// TestCallAndLoadThroughPortForward: from a network namespace that
// reaches the API server but not the pod network, as a workstation
// outside the cluster's network does, kuberpc call cannot connect to the
// pods it resolves; with --port-forward it calls them through the API
// server's port-forward, finds the Service that serves a method the same
// way, and kuberpc load --port-forward still balances over both pods,
// counted by their addresses.
func TestCallAndLoadThroughPortForward(t *testing.T) {
	ns := env.Namespace(t)
	mustKuberpc(t, "deploy", "-f", writeApp(t, ns, "kuberpc.local/example:v1"))
	outside := apiServerOnly(t)
	target := "kubernetes:///example." + ns + ":grpc"

	out, code := outside("call", "example.ExampleService/SayHello", "-d", `{"name":"pf"}`, "--target", target, "--timeout", "3s")
	if code == 0 {
		t.Fatalf("kuberpc call reached a pod from a namespace without a route to the pod network:\n%s", out)
	}
	if !strings.Contains(out, "network is unreachable") || !strings.Contains(out, "--port-forward reaches the pods through the API server") {
		t.Errorf("kuberpc call to unreachable pods: want the connection's error and the hint at --port-forward:\n%s", out)
	}
	// Finding the Service, the Services' silence is explained the same way.
	out, code = outside("call", "example.ExampleService/SayHello", "-n", ns, "--timeout", "3s")
	if code == 0 || !strings.Contains(out, "did not answer") || !strings.Contains(out, "--port-forward reaches the pods through the API server") {
		t.Errorf("kuberpc call finding the Service of unreachable pods: exit %d; want why they did not answer and the hint:\n%s", code, out)
	}
	out, code = outside("call", "example.ExampleService/SayHello", "-d", `{"name":"pf"}`, "--target", target, "--port-forward")
	if code != 0 || !strings.Contains(out, `"Hello, pf!"`) {
		t.Errorf("kuberpc call --port-forward: exit %d\n%s", code, out)
	}
	out, code = outside("call", "example.StreamService/Chat", "-d", `{"name":"a"} {"name":"b"}`, "-n", ns, "--port-forward")
	if code != 0 || !strings.Contains(out, `"Hello, a!"`) || !strings.Contains(out, `"Hello, b!"`) {
		t.Errorf("kuberpc call --port-forward of a stream, its Service found through port-forward: exit %d\n%s", code, out)
	}
	// A target naming no namespace is read in -n's, as kubectl reads names.
	out, code = outside("load", "--rate", "50", "--duration", "2s", "--target", "kubernetes:///example:grpc", "-n", ns, "--port-forward")
	if code != 0 || !strings.Contains(out, "unary calls: 100, failed 0") || strings.Count(out, "198.18.") < 2 {
		t.Errorf("kuberpc load --port-forward: exit %d; want 100 calls, none failed, answered by both pods\n%s", code, out)
	}
	out, code = outside("call", "example.ExampleService/SayHello", "--target", "127.0.0.1:50051", "--port-forward")
	if code == 0 || !strings.Contains(out, "--port-forward reaches pods through the API server: it needs a kubernetes:/// target") {
		t.Errorf("kuberpc call --port-forward to an address: exit %d\n%s", code, out)
	}
}

// apiServerOnly makes a network namespace with nothing but loopback, in
// which the API server's address (127.0.0.1 and its port) is relayed to
// the host's, and returns a function running the CLI in it: the CLI
// reaches the API server, and no pod.
func apiServerOnly(t *testing.T) func(args ...string) (string, int) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", env.Cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("e2e-outside-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	ip("-n", name, "link", "set", "lo", "up")

	var l net.Listener
	if err := podnet.InNamespace("/var/run/netns/"+name, func() (err error) {
		l, err = net.Listen("tcp", u.Host)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", u.Host)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
	return func(args ...string) (string, int) {
		return kuberpcUnder(t, []string{"ip", "netns", "exec", name}, args...)
	}
}
