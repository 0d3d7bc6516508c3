package nodeagent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// CreatePod starts pod: its network namespace, token, and containers. It
// returns once the pod is set up; containers start in the background and
// report through NotifyPods.
func (a *Agent) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	k := key(pod.Namespace, pod.Name)
	a.mu.Lock()
	if existing, ok := a.pods[k]; ok && existing.pod.UID == pod.UID {
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()

	ip, err := a.ipam.allocate()
	if err != nil {
		return err
	}
	id := string(pod.UID)[:8] + string(pod.UID)[len(pod.UID)-4:]
	if err := podnet.Setup(a.cfg.Network, id, ip); err != nil {
		a.ipam.release(ip)
		return fmt.Errorf("pod network for %s: %w", k, err)
	}
	p := newPodRun(a, pod.DeepCopy(), id, ip)
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	if err := p.writeResolvConf(); err != nil {
		p.cleanup()
		return err
	}
	if automount(pod) {
		refresh, err := a.projectToken(ctx, pod, p.tokenDir())
		if err != nil {
			p.cleanup()
			return err
		}
		go a.keepTokenFresh(p.ctx, pod, p.tokenDir(), refresh)
	}
	if err := a.provideVolumes(ctx, p); err != nil {
		p.cleanup()
		return err
	}
	if err := p.saveRecord(); err != nil {
		p.cleanup()
		return err
	}
	if a.cgroups != "" {
		for _, c := range pod.Spec.Containers {
			if err := createCgroup(a.cgroups, containerCgroup(pod, c.Name), limitsOf(c.Resources)); err != nil {
				p.cleanup()
				return fmt.Errorf("cgroup of container %s: %w", c.Name, err)
			}
		}
	}
	a.mu.Lock()
	a.pods[k] = p
	a.mu.Unlock()
	a.log.Info("pod created", "pod", k, "ip", ip.String())
	p.start()
	return nil
}

func automount(pod *corev1.Pod) bool {
	if pod.Spec.AutomountServiceAccountToken != nil {
		return *pod.Spec.AutomountServiceAccountToken
	}
	return true
}

// UpdatePod accepts spec changes; the process model has nothing to change
// in place (a new image means a new pod through the Deployment).
func (a *Agent) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	p, err := a.lookup(pod.Namespace, pod.Name)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.pod.ObjectMeta = *pod.ObjectMeta.DeepCopy()
	p.mu.Unlock()
	return nil
}

// DeletePod starts the pod's termination: preStop hooks, SIGTERM, SIGKILL
// after the grace period. It returns at once; the terminal status is
// reported through NotifyPods and the pod object is then deleted.
//
// A pod bound to this node that the agent does not run (its start failed,
// or it was lost with a previous agent) has no processes to stop: its
// object is deleted at once, as the kubelet does; virtual-kubelet would
// otherwise leave it Terminating, and its namespace with it.
func (a *Agent) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	p, err := a.lookup(pod.Namespace, pod.Name)
	if err != nil {
		zero := int64(0)
		uid := pod.UID
		err := a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete pod %s/%s, which is not running on this node: %w", pod.Namespace, pod.Name, err)
		}
		a.log.Info("deleted a pod not running on this node", "pod", key(pod.Namespace, pod.Name))
		return nil
	}
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	p.terminate(grace, true)
	return nil
}

// GetPod returns the pod with its current status.
func (a *Agent) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	p, err := a.lookup(namespace, name)
	if err != nil {
		return nil, err
	}
	return p.snapshot(), nil
}

// lookup returns the pod namespace/name, or a NotFound error.
func (a *Agent) lookup(namespace, name string) (*podRun, error) {
	a.mu.Lock()
	p, ok := a.pods[key(namespace, name)]
	a.mu.Unlock()
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	return p, nil
}

// GetPodStatus returns the pod's current status.
func (a *Agent) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := a.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod on the node.
func (a *Agent) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	pods := a.podList()
	out := make([]*corev1.Pod, 0, len(pods))
	for _, p := range pods {
		out = append(out, p.snapshot())
	}
	return out, nil
}

// podList returns the pods on the node now.
func (a *Agent) podList() []*podRun {
	a.mu.Lock()
	defer a.mu.Unlock()
	pods := make([]*podRun, 0, len(a.pods))
	for _, p := range a.pods {
		pods = append(pods, p)
	}
	return pods
}

// NotifyPods registers virtual-kubelet's status callback.
// Pods adopted from an earlier agent then report their status, from
// another goroutine: f waits for virtual-kubelet's pod cache, which it
// fills only once NotifyPods has returned.
func (a *Agent) NotifyPods(ctx context.Context, f func(*corev1.Pod)) {
	a.mu.Lock()
	a.notifyFn = f
	a.mu.Unlock()
	go func() {
		for _, p := range a.podList() {
			p.changed()
		}
	}()
}

func (a *Agent) notify(pod *corev1.Pod) {
	a.mu.Lock()
	f := a.notifyFn
	a.mu.Unlock()
	if f != nil {
		f(pod)
	}
}

// GetContainerLogs serves `kubectl logs`: the container's output, with
// --tail, --limit-bytes, --since, --timestamps, --follow and --previous
// (the run before the current one).
func (a *Agent) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	p, err := a.lookup(namespace, podName)
	if err != nil {
		return nil, err
	}
	c := p.container(containerName)
	if c == nil {
		return nil, errdefs.NotFoundf("container %q is not in pod %s/%s", containerName, namespace, podName)
	}
	path := c.logPath
	if opts.Previous {
		path = c.previousLogPath()
		if _, err := os.Stat(path); err != nil {
			return nil, errdefs.InvalidInputf("previous terminated container %q in pod %q not found", c.spec.Name, podName)
		}
	}
	return openLog(ctx, path, a.cfg.ContainerLogMaxFiles, opts)
}

// RunInContainer is not supported: pods are plain processes.
func (a *Agent) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach api.AttachIO) error {
	return errdefs.InvalidInput("kubectl exec is not supported by the kuberpc node agent")
}

// AttachToContainer is not supported.
func (a *Agent) AttachToContainer(ctx context.Context, namespace, podName, containerName string, attach api.AttachIO) error {
	return errdefs.InvalidInput("kubectl attach is not supported by the kuberpc node agent")
}

// PortForward connects stream to port on the pod's loopback, from inside
// its network namespace, as the kubelet's runtimes do (kubectl
// port-forward; a port the pod serves on 127.0.0.1 only is reachable
// too). It returns when the pod's side closes, the stream ends or ctx is
// done.
func (a *Agent) PortForward(ctx context.Context, namespace, pod string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	p, err := a.lookup(namespace, pod)
	if err != nil {
		return err
	}
	conn, err := podnet.Dial(ctx, p.id, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port-forward to pod %s/%s port %d: %w", namespace, pod, port, err)
	}
	defer conn.Close()
	fromPod := make(chan error, 1)
	go func() {
		_, err := io.Copy(stream, conn)
		fromPod <- err
	}()
	go func() {
		// The client's end of its writing is passed on as a half close,
		// so that a server reading to the end still answers.
		if _, err := io.Copy(conn, stream); err == nil {
			if c, ok := conn.(interface{ CloseWrite() error }); ok {
				c.CloseWrite()
				return
			}
		}
		conn.Close()
	}()
	select {
	case err = <-fromPod:
	case <-ctx.Done():
	}
	return err
}

// GetStatsSummary reports each pod's CPU and memory, measured from its
// processes (/proc), in the kubelet's summary format.
func (a *Agent) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	now := metav1.Now()
	s := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: a.cfg.NodeName, StartTime: now}}
	for _, p := range a.podList() {
		s.Pods = append(s.Pods, p.stats(now))
	}
	return s, nil
}

// GetMetricsResource serves the kubelet's /metrics/resource, which
// metrics-server scrapes: CPU time and memory working set of the node,
// each pod and each container (from their cgroups), with the time each
// was read.
func (a *Agent) GetMetricsResource(ctx context.Context) ([]*dto.MetricFamily, error) {
	return a.resourceMetrics(time.Now()), nil
}
