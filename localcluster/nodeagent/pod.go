package nodeagent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// podRun is one pod on the node: its namespace, containers and status.
type podRun struct {
	a      *Agent
	id     string
	ip     net.IP
	dir    string
	resolv string          // its resolv.conf; "" for the host's
	ctx    context.Context // ends when the pod is gone
	cancel context.CancelFunc
	start_ time.Time

	notifyMu   sync.Mutex // serializes changed
	mu         sync.Mutex
	pod        *corev1.Pod
	containers []*container
	deleting   bool
	stopOnce   sync.Once
	done       chan struct{} // closed when every container has exited for good
}

func newPodRun(a *Agent, pod *corev1.Pod, id string, ip net.IP) *podRun {
	ctx, cancel := context.WithCancel(context.Background())
	p := &podRun{a: a, id: id, ip: ip, dir: a.podDir(pod), ctx: ctx, cancel: cancel, start_: time.Now(), pod: pod, done: make(chan struct{}),
		resolv: resolvConf(pod, a.cfg.ClusterDNS, a.cfg.ClusterDomain)}
	for _, spec := range pod.Spec.Containers {
		p.containers = append(p.containers, newContainer(p, spec))
	}
	return p
}

func (p *podRun) tokenDir() string { return filepath.Join(p.dir, "serviceaccount") }

func (p *podRun) netnsPath() string { return podnet.NamespacePath(p.id) }

func (p *podRun) container(name string) *container {
	for _, c := range p.containers {
		if c.spec.Name == name {
			return c
		}
	}
	if name == "" && len(p.containers) == 1 {
		return p.containers[0]
	}
	return nil
}

func (p *podRun) start() {
	var wg sync.WaitGroup
	for _, c := range p.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run()
		}()
	}
	go func() {
		wg.Wait()
		p.finish()
	}()
	p.changed()
}

// changed reports the pod's status to virtual-kubelet. Reports are
// serialized per pod, each snapshot taken in its turn: virtual-kubelet
// keeps the last one it received, and a stale snapshot delivered after a
// fresh one (a readiness change racing the adoption report) once left an
// adopted pod not Ready for good.
func (p *podRun) changed() {
	p.notifyMu.Lock()
	defer p.notifyMu.Unlock()
	p.a.notify(p.snapshot())
}

// snapshot returns a copy of the pod with its current status.
func (p *podRun) snapshot() *corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	pod := p.pod.DeepCopy()
	st := &pod.Status
	st.PodIP = p.ip.String()
	st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	st.HostIP = p.a.gateway.String()
	st.HostIPs = []corev1.HostIP{{IP: st.HostIP}}
	start := metav1.NewTime(p.start_)
	st.StartTime = &start
	st.ContainerStatuses = nil
	allReady, allStarted, running, terminated, failed := true, true, 0, 0, 0
	var why []string
	for _, c := range p.containers {
		c.mu.Lock()
		if c.probeErr != "" {
			why = append(why, c.spec.Name+": "+c.probeErr)
		}
		c.mu.Unlock()
		cs := c.status()
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		allReady = allReady && cs.Ready
		allStarted = allStarted && cs.State.Running != nil
		if cs.State.Running != nil {
			running++
		}
		if t := cs.State.Terminated; t != nil {
			terminated++
			if t.ExitCode != 0 {
				failed++
			}
		}
	}
	switch {
	case terminated == len(p.containers) && (p.deleting || pod.Spec.RestartPolicy != corev1.RestartPolicyAlways):
		st.Phase = corev1.PodSucceeded
		if failed > 0 {
			st.Phase = corev1.PodFailed
		}
	case running > 0 || terminated > 0:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	now := metav1.Now()
	msg := strings.Join(why, "; ")
	cond := func(t corev1.PodConditionType, ok bool, reason string) {
		s := corev1.ConditionFalse
		m := msg
		if ok {
			s = corev1.ConditionTrue
			reason, m = "", ""
		}
		for i := range st.Conditions {
			if st.Conditions[i].Type == t {
				if st.Conditions[i].Status != s {
					st.Conditions[i].LastTransitionTime = now
				}
				st.Conditions[i].Status, st.Conditions[i].Reason, st.Conditions[i].Message = s, reason, m
				return
			}
		}
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: m, LastTransitionTime: now})
	}
	ready := allReady && allStarted && st.Phase == corev1.PodRunning
	cond(corev1.PodScheduled, true, "")
	cond(corev1.PodReadyToStartContainers, true, "")
	cond(corev1.PodInitialized, true, "")
	cond(corev1.ContainersReady, ready, "ContainersNotReady")
	cond(corev1.PodReady, ready, "ContainersNotReady")
	return pod
}

// terminate stops every container: preStop hooks (when graceful), then
// SIGTERM, then SIGKILL at the grace deadline. deleteObject deletes the pod
// object once they have exited, as the kubelet does.
func (p *podRun) terminate(grace time.Duration, deleteObject bool) {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.deleting = true
		p.mu.Unlock()
		deadline := time.Now().Add(grace)
		p.a.log.Info("terminating pod", "pod", p.pod.Namespace+"/"+p.pod.Name, "grace", grace)
		for _, c := range p.containers {
			go c.stop(deadline, deleteObject)
		}
		if deleteObject {
			go func() {
				<-p.done
				p.deleteObject()
			}()
		}
	})
}

// finish runs when every container has exited for good.
func (p *podRun) finish() {
	p.changed()
	p.cancel()
	close(p.done)
}

func (p *podRun) deleteObject() {
	pod := p.snapshot()
	zero := int64(0)
	uid := types.UID(pod.UID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil {
		p.a.log.Warn("delete terminated pod", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
	p.cleanup()
}

// cleanup removes the pod's namespace, files and address.
func (p *podRun) cleanup() {
	p.cancel()
	if p.a.cgroups != "" {
		for _, c := range p.containers {
			removeCgroup(p.a.cgroups, containerCgroup(p.pod, c.spec.Name))
		}
	}
	_ = podnet.Remove(p.id)
	p.a.ipam.release(p.ip)
	_ = os.RemoveAll(p.dir)
	p.a.mu.Lock()
	k := key(p.pod.Namespace, p.pod.Name)
	if cur, ok := p.a.pods[k]; ok && cur == p {
		delete(p.a.pods, k)
	}
	p.a.mu.Unlock()
}

// stats measures the pod's processes.
func (p *podRun) stats(now metav1.Time) statsv1alpha1.PodStats {
	ps := statsv1alpha1.PodStats{
		PodRef:    statsv1alpha1.PodReference{Name: p.pod.Name, Namespace: p.pod.Namespace, UID: string(p.pod.UID)},
		StartTime: metav1.NewTime(p.start_),
	}
	var cpuNano, mem uint64
	var cpuTotal uint64
	for _, c := range p.containers {
		u := c.usage()
		cs := statsv1alpha1.ContainerStats{
			Name: c.spec.Name, StartTime: metav1.NewTime(p.start_),
			CPU:    &statsv1alpha1.CPUStats{Time: now, UsageNanoCores: &u.nanoCores, UsageCoreNanoSeconds: &u.cpuNanos},
			Memory: &statsv1alpha1.MemoryStats{Time: now, WorkingSetBytes: &u.rss, RSSBytes: &u.rss},
		}
		ps.Containers = append(ps.Containers, cs)
		cpuNano += u.nanoCores
		cpuTotal += u.cpuNanos
		mem += u.rss
	}
	ps.CPU = &statsv1alpha1.CPUStats{Time: now, UsageNanoCores: &cpuNano, UsageCoreNanoSeconds: &cpuTotal}
	ps.Memory = &statsv1alpha1.MemoryStats{Time: now, WorkingSetBytes: &mem}
	return ps
}
