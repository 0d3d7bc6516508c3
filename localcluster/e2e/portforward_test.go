package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
)

// echoOnLoopback serves port 7000 on the pod's 127.0.0.1 only: it reads a
// connection to its end (the client's half close) and answers with what
// it read.
const echoOnLoopback = `import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 7000))
s.listen()
print('listening', flush=True)
while True:
    c, _ = s.accept()
    data = b''
    while True:
        b = c.recv(4096)
        if not b:
            break
        data += b
    c.sendall(b'pod saw ' + data)
    c.close()
`

// TestPortForward: kubectl port-forward reaches a port the pod serves on
// its own loopback only, as on a kubelet, whose runtime connects from
// inside the pod's network namespace (the pod's IP does not answer on
// that port); the client's half close reaches the pod, and the pod's
// answer comes back. It does after an ip netns add on the host too.
func TestPortForward(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	createPod(t, ns, pythonPod("echo", echoOnLoopback, corev1.ResourceRequirements{}))
	pod := waitContainer(t, ns, "echo", "the echo server running", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool {
		return cs.State.Running != nil
	})
	clustertest.WaitFor(t, 30*time.Second, "the echo server listening", func() (bool, string) {
		out, err := env.KubectlErr(ns, "", "logs", "echo")
		return err == nil && out == "listening\n", out
	})
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(pod.Status.PodIP, "7000"), 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("%s:7000 answered; want the port on the pod's loopback only", pod.Status.PodIP)
	}

	// ip netns add, on first use, bind-mounts /var/run/netns over itself:
	// had the agent left it a plain directory, the pod's namespace would
	// be hidden beneath, and cluster down (TestMain) could not delete it
	// ("pod network: invalid argument").
	other := fmt.Sprintf("e2e-other-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", other).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", other, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", other).Run() })

	cmd := exec.Command(env.Cluster.Bin.Path("kubectl"), "--kubeconfig", env.Cluster.Kubeconfig, "-n", ns, "port-forward", "pod/echo", ":7000")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	forwarding := regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> 7000`)
	var local string
	for lines.Scan() {
		if m := forwarding.FindStringSubmatch(lines.Text()); m != nil {
			local = "127.0.0.1:" + m[1]
			break
		}
		t.Logf("kubectl port-forward: %s", lines.Text())
	}
	if local == "" {
		t.Fatalf("kubectl port-forward ended without forwarding: %v", lines.Err())
	}
	go io.Copy(io.Discard, out)

	for i, msg := range []string{"hello", "again, on a new stream"} {
		c, err := net.DialTimeout("tcp", local, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if want := "pod saw " + msg; err != nil || string(got) != want {
			t.Errorf("connection %d through kubectl port-forward: %q, %v; want %q", i+1, got, err, want)
		}
	}
}
