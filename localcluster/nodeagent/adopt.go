package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// A node agent that stops leaves its pods running, as the kubelet does,
// and the next one adopts them: each pod's directory holds what that
// takes (podRecord, and a containerRecord per container), and each
// container's monitor (see monitor) keeps its process, log and exit
// status independent of the agent.

// podRecord is what a pod's directory says of it.
type podRecord struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	ID        string `json:"id"` // its network namespace's id
	IP        string `json:"ip"`
}

// containerRecord is what a container's directory entry says of its
// current run.
type containerRecord struct {
	MonitorPID   int                   `json:"monitorPID"`
	MonitorStart uint64                `json:"monitorStart"` // /proc start time, against pid reuse
	StartedAt    metav1.Time           `json:"startedAt"`
	Restarts     int32                 `json:"restarts"`
	ImageID      string                `json:"imageID"`
	LastState    corev1.ContainerState `json:"lastState"`
}

const podRecordFile = "pod.json"

func (p *podRun) saveRecord() error {
	b, err := json.Marshal(podRecord{Namespace: p.pod.Namespace, Name: p.pod.Name, UID: string(p.pod.UID), ID: p.id, IP: p.ip.String()})
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(p.dir, podRecordFile), b)
}

func (c *container) recordPath() string { return filepath.Join(c.p.dir, c.spec.Name+".state.json") }

// saveState records the container's current run for a later agent.
func (c *container) saveState(r *process) error {
	c.mu.Lock()
	rec := containerRecord{MonitorPID: r.proc.Pid, MonitorStart: procStart(r.proc.Pid), StartedAt: r.startedAt,
		Restarts: c.restarts, ImageID: c.imageID, LastState: *c.lastState.DeepCopy()}
	c.mu.Unlock()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return writeAtomic(c.recordPath(), b)
}

// procStart returns the start time of process pid (field 22 of
// /proc/PID/stat), or 0 when it is gone or a zombie.
func procStart(pid int) uint64 {
	f := procStat(pid)
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// procStat returns the fields of /proc/PID/stat after the command name
// (f[0] is field 3, the state), or nil when the process is gone.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// alive reports whether the monitor rec recorded still runs.
func (rec containerRecord) alive() bool {
	return rec.MonitorPID > 0 && rec.MonitorStart != 0 && procStart(rec.MonitorPID) == rec.MonitorStart
}

// adoptPods takes over the pods an earlier agent left running: a pod
// whose object still exists with the same UID and whose network namespace
// is still there gets its containers' running processes adopted (probes,
// status and restarts resume; nothing restarts); anything else left
// behind is stopped and removed. It returns the ids of the adopted pods'
// network namespaces.
func (a *Agent) adoptPods(ctx context.Context) map[string]bool {
	keep := map[string]bool{}
	dirs, _ := filepath.Glob(filepath.Join(a.cfg.StateDir, "pods", "*"))
	for _, dir := range dirs {
		p, err := a.adoptPod(ctx, dir)
		if err != nil {
			a.log.Info("not adopting a pod an earlier agent left", "dir", filepath.Base(dir), "why", err)
			stopPodDir(dir, 5*time.Second)
			continue
		}
		keep[p.id] = true
		a.log.Info("pod adopted", "pod", key(p.pod.Namespace, p.pod.Name), "ip", p.ip.String())
	}
	return keep
}

func (a *Agent) adoptPod(ctx context.Context, dir string) (*podRun, error) {
	var rec podRecord
	b, err := os.ReadFile(filepath.Join(dir, podRecordFile))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", podRecordFile, err)
	}
	ip := net.ParseIP(rec.IP)
	if ip == nil {
		return nil, fmt.Errorf("%s: bad ip %q", podRecordFile, rec.IP)
	}
	if _, err := os.Stat(podnet.NamespacePath(rec.ID)); err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	var pod *corev1.Pod
	for attempt := 0; ; attempt++ {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pod, err = a.client.CoreV1().Pods(rec.Namespace).Get(gctx, rec.Name, metav1.GetOptions{})
		cancel()
		if err == nil || apierrors.IsNotFound(err) || attempt == 5 || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("pod %s/%s: %w", rec.Namespace, rec.Name, err)
	case string(pod.UID) != rec.UID:
		return nil, fmt.Errorf("pod %s/%s is now another pod (uid %s, was %s)", rec.Namespace, rec.Name, pod.UID, rec.UID)
	case pod.DeletionTimestamp != nil:
		return nil, fmt.Errorf("pod %s/%s is being deleted", rec.Namespace, rec.Name)
	}
	p := newPodRun(a, pod, rec.ID, ip)
	if p.dir != dir {
		return nil, fmt.Errorf("pod %s/%s belongs in %s", rec.Namespace, rec.Name, p.dir)
	}
	running := 0
	for _, c := range p.containers {
		var cr containerRecord
		if b, err := os.ReadFile(c.recordPath()); err == nil && json.Unmarshal(b, &cr) == nil {
			c.restarts, c.imageID, c.lastState = cr.Restarts, cr.ImageID, cr.LastState
			if cr.alive() {
				proc, _ := os.FindProcess(cr.MonitorPID)
				files := c.files()
				c.adopted = &process{proc: proc, startedAt: cr.StartedAt, wait: func() exitStatus {
					st := waitAdopted(cr, files.exit)
					a.log.Info("adopted process exited", "pod", key(pod.Namespace, pod.Name), "container", c.spec.Name, "exitCode", st.ExitCode)
					return st
				}}
				running++
			}
		}
	}
	if running == 0 {
		return nil, errors.New("none of its containers runs")
	}
	if !a.ipam.reserve(ip) {
		return nil, fmt.Errorf("address %s is taken", ip)
	}
	if automount(pod) {
		refresh, err := a.projectToken(ctx, pod, p.tokenDir())
		if err != nil {
			a.log.Warn("refresh the token of an adopted pod", "pod", key(pod.Namespace, pod.Name), "err", err)
			refresh = time.Now().Add(refreshAfter(time.Minute))
		}
		go a.keepTokenFresh(p.ctx, pod, p.tokenDir(), refresh)
	}
	if err := a.provideVolumes(ctx, p); err != nil {
		a.log.Warn("renew the volumes of an adopted pod", "pod", key(pod.Namespace, pod.Name), "err", err)
	}
	a.mu.Lock()
	a.pods[key(pod.Namespace, pod.Name)] = p
	a.mu.Unlock()
	p.start()
	return p, nil
}

// waitAdopted waits for an adopted monitor to exit (it is not this
// process's child: a pidfd, or polling, tells when) and returns the exit
// status the monitor recorded.
func waitAdopted(rec containerRecord, exitFile string) exitStatus {
	if fd, err := unix.PidfdOpen(rec.MonitorPID, 0); err == nil {
		for rec.alive() {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, 1000); err != nil && !errors.Is(err, unix.EINTR) {
				break
			}
		}
		unix.Close(fd)
	}
	for rec.alive() {
		time.Sleep(200 * time.Millisecond)
	}
	var st exitStatus
	if b, err := os.ReadFile(exitFile); err == nil && json.Unmarshal(b, &st) == nil {
		return st
	}
	// The monitor itself was killed (SIGKILL reaches the whole group).
	return exitStatus{ExitCode: 128 + int32(syscall.SIGKILL), Signal: int(syscall.SIGKILL), FinishedAt: time.Now()}
}

// StopPods stops the pods a node agent left running in stateDir (the
// agent's --state-dir): SIGTERM to each container's process group, SIGKILL
// after grace, then their directories are removed. `cluster down` calls
// it after stopping the agent, which leaves pods running as the kubelet
// does.
func StopPods(stateDir string, grace time.Duration) {
	dirs, _ := filepath.Glob(filepath.Join(stateDir, "pods", "*"))
	for _, dir := range dirs {
		stopPodDir(dir, grace)
	}
}

// stopPodDir stops the containers recorded in a pod directory and
// removes it, and the pod's network namespace.
func stopPodDir(dir string, grace time.Duration) {
	records, _ := filepath.Glob(filepath.Join(dir, "*.state.json"))
	var live []containerRecord
	for _, f := range records {
		var cr containerRecord
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &cr) == nil && cr.alive() {
			_ = syscall.Kill(-cr.MonitorPID, syscall.SIGTERM)
			live = append(live, cr)
		}
	}
	deadline := time.Now().Add(grace)
	for _, cr := range live {
		for cr.alive() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if cr.alive() {
			_ = syscall.Kill(-cr.MonitorPID, syscall.SIGKILL)
		}
	}
	var rec podRecord
	if b, err := os.ReadFile(filepath.Join(dir, podRecordFile)); err == nil && json.Unmarshal(b, &rec) == nil && rec.ID != "" {
		_ = podnet.Remove(rec.ID)
		if mode := cgroupMode(); mode != "" {
			for _, f := range records {
				name := strings.TrimSuffix(filepath.Base(f), ".state.json")
				removeCgroup(mode, path.Join(cgroupRoot, rec.UID, name))
			}
		}
	}
	_ = os.RemoveAll(dir)
}
