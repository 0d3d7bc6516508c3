package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type probeKind string

const (
	startupProbe   probeKind = "startup"
	livenessProbe  probeKind = "liveness"
	readinessProbe probeKind = "readiness"
)

// startProbes runs the container's probes for one run of its process,
// until ctx ends: startup first, then liveness and readiness.
func (c *container) startProbes(ctx context.Context) {
	if c.spec.ReadinessProbe == nil {
		// No readiness probe: ready once started.
		go func() {
			if c.waitStarted(ctx) {
				c.setReady(true, "")
			}
		}()
	} else {
		go c.probeLoop(ctx, readinessProbe, c.spec.ReadinessProbe)
	}
	if c.spec.LivenessProbe != nil {
		go c.probeLoop(ctx, livenessProbe, c.spec.LivenessProbe)
	}
	if c.spec.StartupProbe != nil {
		go c.probeLoop(ctx, startupProbe, c.spec.StartupProbe)
	}
}

func (c *container) waitStarted(ctx context.Context) bool {
	for {
		c.mu.Lock()
		started := c.started
		c.mu.Unlock()
		if started {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *container) setReady(ready bool, why string) {
	c.mu.Lock()
	changed := c.ready != ready || c.probeErr != why
	c.ready = ready
	c.probeErr = why
	c.mu.Unlock()
	if changed {
		c.p.a.log.Info("container readiness", "pod", c.p.pod.Name, "container", c.spec.Name, "ready", ready, "why", why)
		c.p.changed()
	}
}

// thresholds returns the probe's success and failure thresholds, with
// the API's defaults (1 and 3) for fields left at zero.
func thresholds(pr *corev1.Probe) (success, failure int32) {
	success, failure = pr.SuccessThreshold, pr.FailureThreshold
	if success <= 0 {
		success = 1
	}
	if failure <= 0 {
		failure = 3
	}
	return success, failure
}

func seconds(v int32, def int32) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v) * time.Second
}

// probeLoop runs one probe with the Kubernetes semantics of its fields.
func (c *container) probeLoop(ctx context.Context, kind probeKind, pr *corev1.Probe) {
	if kind != startupProbe && !c.waitStarted(ctx) {
		return
	}
	period := seconds(pr.PeriodSeconds, 10)
	timeout := seconds(pr.TimeoutSeconds, 1)
	successNeeded, failuresAllowed := thresholds(pr)
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(pr.InitialDelaySeconds) * time.Second):
	}
	var successes, failures int32
	for {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := c.runHandler(pctx, &pr.ProbeHandler)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			successes++
			failures = 0
		} else {
			failures++
			successes = 0
			c.event(corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %v", kind.title(), err)
		}
		switch kind {
		case readinessProbe:
			if successes >= successNeeded {
				c.setReady(true, "")
			} else if failures >= failuresAllowed || (failures > 0 && !c.readyNow()) {
				c.setReady(false, "readiness probe failed: "+err.Error())
			}
		case livenessProbe:
			if failures >= failuresAllowed {
				c.kill("failed liveness probe")
				return
			}
		case startupProbe:
			if successes >= 1 {
				c.mu.Lock()
				c.started = true
				c.mu.Unlock()
				c.p.changed()
				return
			}
			if failures >= failuresAllowed {
				c.kill("failed startup probe")
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
	}
}

// title is the probe kind as the kubelet's events name it.
func (k probeKind) title() string {
	return strings.ToUpper(string(k[:1])) + string(k[1:])
}

func (c *container) readyNow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// runHandler runs a probe or hook handler: grpc, httpGet, tcpSocket, exec
// or sleep. Its error says what failed, for the pod's status and logs.
func (c *container) runHandler(ctx context.Context, h *corev1.ProbeHandler) error {
	switch {
	case h.GRPC != nil:
		return c.probeGRPC(ctx, h.GRPC)
	case h.HTTPGet != nil:
		return c.probeHTTP(ctx, h.HTTPGet)
	case h.TCPSocket != nil:
		port, err := c.port(h.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(c.host(h.TCPSocket.Host), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case h.Exec != nil:
		return c.exec(ctx, h.Exec.Command)
	}
	return errors.New("probe has no handler (want grpc, httpGet, tcpSocket or exec)")
}

// runHandler for lifecycle hooks, which also allow sleep.
func (c *container) runLifecycle(ctx context.Context, h *corev1.LifecycleHandler) error {
	switch {
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
		return nil
	case h.Exec != nil:
		return c.exec(ctx, h.Exec.Command)
	case h.HTTPGet != nil:
		return c.probeHTTP(ctx, h.HTTPGet)
	case h.TCPSocket != nil:
		return c.runHandler(ctx, &corev1.ProbeHandler{TCPSocket: h.TCPSocket})
	}
	return errors.New("lifecycle hook has no handler")
}

func (c *container) host(h string) string {
	if h != "" {
		return h
	}
	return c.p.ip.String()
}

// port resolves a probe port by number or by the container's port name.
func (c *container) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal < 1 || p.IntVal > 65535 {
			return 0, fmt.Errorf("probe port %d out of range 1-65535", p.IntVal)
		}
		return int(p.IntVal), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("probe port %q is not a port name of container %s", p.StrVal, c.spec.Name)
}

func (c *container) probeGRPC(ctx context.Context, g *corev1.GRPCAction) error {
	if g.Port < 1 || g.Port > 65535 {
		return fmt.Errorf("grpc probe port %d out of range 1-65535", g.Port)
	}
	cc, err := grpc.NewClient(net.JoinHostPort(c.p.ip.String(), strconv.Itoa(int(g.Port))),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	svc := ""
	if g.Service != nil {
		svc = *g.Service
	}
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		return fmt.Errorf("grpc health check on port %d: %w", g.Port, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health of %q on port %d is %s", svc, g.Port, resp.GetStatus())
	}
	return nil
}

func (c *container) probeHTTP(ctx context.Context, g *corev1.HTTPGetAction) error {
	port, err := c.port(g.Port)
	if err != nil {
		return err
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, "GET", scheme+"://"+net.JoinHostPort(c.host(g.Host), strconv.Itoa(port))+path, nil)
	if err != nil {
		return err
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe %s: %s", path, resp.Status)
	}
	return nil
}

// maxExecOutput is how much of an exec handler's output is kept for its
// error, as the kubelet keeps (10 KiB): the error reaches the pod's Ready
// condition and its events, and a command that prints without end must
// fill neither the agent's memory nor a pod status past what the API
// server takes.
const maxExecOutput = 10 << 10

// headWriter keeps the first max bytes written to it and counts the rest.
type headWriter struct {
	max     int
	head    []byte
	dropped int64
}

func (w *headWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.max-len(w.head))
	w.head = append(w.head, p[:n]...)
	w.dropped += int64(len(p) - n)
	return len(p), nil
}

// String is what was kept, trimmed, saying how much was not.
func (w *headWriter) String() string {
	s := strings.TrimSpace(string(w.head))
	if w.dropped > 0 {
		s += fmt.Sprintf("… (%d bytes more)", w.dropped)
	}
	return s
}

// exec runs argv inside the pod's network namespace with the container's
// environment; it succeeds when the command exits 0.
func (c *container) exec(ctx context.Context, argv []string) error {
	if len(argv) == 0 {
		return errors.New("exec handler has no command")
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "POD_IP=" + c.p.ip.String()}
	mounts, err := c.p.mounts(c.spec) // the container's volumes, as in the container
	if err != nil {
		return err
	}
	cmd, err := c.p.a.podInitCmd(c.p.netnsPath(), "", c.p.resolvConfPath(), "", monitorFiles{}, mounts, argv)
	if err != nil {
		return err
	}
	cmd.Env = env
	// A child the command leaves running with its output open (sh -c
	// 'daemon &') would keep Wait waiting for that output, past the
	// handler's timeout and the kill: the probe loop, or the pod's stop
	// behind a preStop hook, would wait for good.
	cmd.WaitDelay = time.Second
	done := make(chan error, 1)
	out := &headWriter{max: maxExecOutput}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			// A handler that failed takes what it started with it (a
			// child that held its output, or any other), as one that
			// timed out does; one that succeeded may have started a
			// daemon on purpose.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			return fmt.Errorf("exec %s: %v: %s", argv[0], err, out)
		}
		return nil
	case <-ctx.Done():
		// Its process group (pod init starts one): the children too.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("exec %s: timed out", argv[0])
	}
}
