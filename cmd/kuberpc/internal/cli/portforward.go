package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// podForwarder connects to pods through the API server's port-forward,
// as kubectl port-forward does, for a CLI that reaches the API server
// but not the pod network (a workstation outside the cluster's
// network). The resolver still finds the pods from EndpointSlices and
// the balancer still picks among them; each connection to a pod address
// becomes a port-forward stream to the pod with that IP, which the
// kubelet connects to the port from inside the pod.
type podForwarder struct {
	cfg       *rest.Config
	cs        kubernetes.Interface
	namespace string
}

// newPodForwarder is a podForwarder for the pods of namespace; none
// means the resolver's own namespace, default outside a cluster (the CLI
// gives --target its namespace: givenTarget).
func newPodForwarder(g *globals, namespace string) (*podForwarder, error) {
	cfg, _, err := g.restConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if namespace == "" {
		namespace = "default"
	}
	return &podForwarder{cfg: cfg, cs: cs, namespace: namespace}, nil
}

// dial connects to addr, a pod's IP and port, through a port-forward to
// the running pod of that IP. It is a grpc.WithContextDialer function.
func (f *podForwarder) dial(ctx context.Context, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	pods, err := f.cs.CoreV1().Pods(f.namespace).List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + host})
	if err != nil {
		return nil, fmt.Errorf("port-forward: find the pod of %s in %s: %w", host, f.namespace, err)
	}
	var pod string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			pod = p.Name
		}
	}
	if pod == "" {
		return nil, fmt.Errorf("port-forward: no running pod of namespace %s has IP %s", f.namespace, host)
	}
	u := f.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(f.namespace).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(f.cfg)
	if err != nil {
		return nil, err
	}
	ws, err := portforward.NewSPDYOverWebsocketDialer(u, f.cfg)
	if err != nil {
		return nil, err
	}
	// kubectl's choice: WebSockets, and SPDY from an API server that
	// cannot upgrade to them.
	dialer := portforward.NewFallbackDialer(ws, spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u), func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	type dialed struct {
		conn httpstream.Connection
		err  error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
		ch <- dialed{c, err}
	}()
	var conn httpstream.Connection
	select {
	case d := <-ch:
		if d.err != nil {
			return nil, fmt.Errorf("port-forward to pod %s/%s: %w", f.namespace, pod, d.err)
		}
		conn = d.conn
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.conn != nil {
				d.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
	headers := http.Header{}
	headers.Set(corev1.StreamType, corev1.StreamTypeError)
	headers.Set(corev1.PortHeader, port)
	headers.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(headers)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", f.namespace, pod, err)
	}
	errStream.Close() // nothing is written to it
	headers.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(headers)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", f.namespace, pod, err)
	}
	// grpc-go's side is one end of a pipe, which has the deadlines a
	// net.Conn needs; the other end is copied to and from the stream.
	mine, theirs := net.Pipe()
	c := &forwardedConn{Conn: mine, remote: podAddr(host, port)}
	failed := make(chan string, 1)
	go func() {
		msg, _ := io.ReadAll(errStream)
		failed <- string(msg)
	}()
	go func() {
		io.Copy(data, theirs)
		data.Close() // the half close
	}()
	go func() {
		io.Copy(theirs, data)
		// The pod's side ended: an error the kubelet sent says why.
		select {
		case msg := <-failed:
			if msg != "" {
				c.fail(errors.New(msg)) // it names the pod and the port
			}
		case <-time.After(time.Second):
		}
		theirs.Close()
		data.Reset()
		conn.Close()
	}()
	return c, nil
}

// forwardedConn is a connection to a pod through port-forward. Its
// remote address is the pod's, so that calls are counted by the pod that
// answered as without port-forward; a read at the end returns the error
// the kubelet gave, if any, in place of io.EOF.
type forwardedConn struct {
	net.Conn
	remote net.Addr

	mu  sync.Mutex
	err error
}

// podAddr is host:port as a TCP address, or as it is when not an IP
// and a port.
func podAddr(host, port string) net.Addr {
	if ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port)); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return pipeAddr(net.JoinHostPort(host, port))
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

// RemoteAddr is the pod's address.
func (c *forwardedConn) RemoteAddr() net.Addr { return c.remote }

func (c *forwardedConn) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

func (c *forwardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, io.EOF) {
		c.mu.Lock()
		if c.err != nil {
			err = c.err
		}
		c.mu.Unlock()
	}
	return n, err
}
