package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/localcluster/images"
)

// container is one container of a pod: a process, restarted per the pod's
// restartPolicy, with its probes.
type container struct {
	p       *podRun
	spec    corev1.Container
	logPath string

	mu        sync.Mutex
	state     corev1.ContainerState
	lastState corev1.ContainerState
	restarts  int32
	ready     bool
	started   bool
	probeErr  string // why the last readiness probe failed
	proc      *os.Process
	imageID   string
	stopping  bool
	stopCh    chan struct{} // closed by stop
	exitCh    chan struct{} // closed when the current process exits
	lastCPU   uint64
	lastCPUAt time.Time
	nanoCores uint64
	// pid is the current run's process (its monitor's child), once known.
	pid int
	// adopted is the process an earlier agent started, which this one
	// watches before it starts any of its own.
	adopted *process
}

func newContainer(p *podRun, spec corev1.Container) *container {
	return &container{
		p: p, spec: spec, logPath: filepath.Join(p.dir, spec.Name+".log"),
		state:  corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		stopCh: make(chan struct{}),
	}
}

func (c *container) status() corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	started := c.started
	cs := corev1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, ImageID: c.imageID,
		State: *c.state.DeepCopy(), LastTerminationState: *c.lastState.DeepCopy(),
		Ready: c.ready && c.state.Running != nil, RestartCount: c.restarts, Started: &started,
	}
	if c.state.Running != nil {
		if pid := c.pidLocked(); pid != 0 {
			cs.ContainerID = "kuberpc://" + strconv.Itoa(pid)
		}
	}
	return cs
}

// event records an event about the container, as the kubelet does:
// against the pod, with the container's field path.
func (c *container) event(eventType, reason, format string, args ...any) {
	ev := c.p.a.events
	if ev == nil {
		return
	}
	pod := c.p.pod
	ref := &corev1.ObjectReference{
		Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
		FieldPath: "spec.containers{" + c.spec.Name + "}",
	}
	ev.Eventf(ref, eventType, reason, format, args...)
}

func (c *container) setWaiting(reason, msg string) {
	c.mu.Lock()
	c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
	c.ready = false
	c.mu.Unlock()
	c.p.changed()
}

func (c *container) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// sleep waits d or until the container is stopped; it reports whether the
// full time passed.
func (c *container) sleep(d time.Duration) bool {
	select {
	case <-c.stopCh:
		return false
	case <-time.After(d):
		return true
	}
}

// run is the container's life: resolve the image, start the process, wait,
// restart with back-off per the pod's restartPolicy, until stopped.
func (c *container) run() {
	a := c.p.a
	backoff := time.Duration(0)
	pulls := 0
	for !c.isStopping() {
		if r := c.adopted; r != nil {
			c.adopted = nil
			ranFor, exit, _ := c.watch(r)
			if !c.restartAfter(ranFor, exit, nil, &backoff) {
				break
			}
			continue
		}
		img, err := a.images.Get(c.spec.Image)
		if err != nil {
			reason := "ErrImagePull"
			if pulls > 0 {
				reason = "ImagePullBackOff"
			}
			pulls++
			c.setWaiting(reason, err.Error())
			if reason == "ErrImagePull" {
				c.event(corev1.EventTypeWarning, "Failed", "Failed to pull image %q: %v", c.spec.Image, err)
			} else {
				c.event(corev1.EventTypeNormal, "BackOff", "Back-off pulling image %q", c.spec.Image)
			}
			if !c.sleep(min(a.cfg.RestartBackoff*time.Duration(1<<min(pulls, 5)), a.cfg.MaxRestartBackoff)) {
				break
			}
			continue
		}
		ranFor, exit, err := c.runOnce(img)
		if err != nil {
			c.setWaiting("RunContainerError", err.Error())
			c.event(corev1.EventTypeWarning, "Failed", "Error: %v", err)
		}
		if !c.restartAfter(ranFor, exit, err, &backoff) {
			break
		}
	}
	c.mu.Lock()
	if c.state.Terminated == nil {
		now := metav1.Now()
		c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}}
	}
	c.ready = false
	c.mu.Unlock()
}

// restartAfter applies the pod's restartPolicy after a run that lasted
// ranFor and exited with exit (or failed to start with err): it waits out
// the crash back-off and reports whether to run the container again.
func (c *container) restartAfter(ranFor time.Duration, exit int32, err error, backoff *time.Duration) bool {
	a := c.p.a
	if c.isStopping() {
		return false
	}
	policy := c.p.pod.Spec.RestartPolicy
	if err == nil && (policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && exit == 0)) {
		return false
	}
	if ranFor > time.Minute {
		*backoff = 0
	}
	if *backoff == 0 {
		*backoff = a.cfg.RestartBackoff
	} else {
		*backoff = min(*backoff*2, a.cfg.MaxRestartBackoff)
	}
	if err == nil {
		c.mu.Lock()
		c.restarts++
		c.mu.Unlock()
		c.setWaiting("CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
			*backoff, c.spec.Name, c.p.pod.Name, c.p.pod.Namespace, c.p.pod.UID))
		c.event(corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)",
			c.spec.Name, c.p.pod.Name, c.p.pod.Namespace, c.p.pod.UID)
	}
	return c.sleep(*backoff)
}

// runOnce starts the process and waits for it to exit. It returns how long
// it ran and its exit code, or an error when it could not start.
func (c *container) runOnce(img images.Image) (time.Duration, int32, error) {
	p := c.p
	argv, env, err := c.commandLine(img)
	if err != nil {
		return 0, 0, err
	}
	if _, err := os.Stat(argv[0]); filepath.IsAbs(argv[0]) && err != nil {
		return 0, 0, fmt.Errorf("executable %s of image %s: %w", argv[0], img.Ref, err)
	}
	dir := c.spec.WorkingDir
	if dir == "" {
		dir = img.WorkingDir
	}
	if dir == "" && filepath.IsAbs(argv[0]) {
		dir = filepath.Dir(argv[0])
	}
	tokenDir := ""
	if automount(p.pod) {
		tokenDir = p.tokenDir()
	}
	mounts, err := p.mounts(c.spec)
	if err != nil {
		return 0, 0, err
	}
	files := c.files()
	// Each run has a log of its own; the last one's is kept for kubectl
	// logs --previous (its newest rotated file when it was rotated just
	// before the end), and the files it rotated are dropped.
	last := files.log
	if st, err := os.Stat(last); err != nil || st.Size() == 0 {
		last = rotatedLog(files.log, 1)
	}
	if st, err := os.Stat(last); err == nil && st.Size() > 0 {
		_ = os.Rename(last, c.previousLogPath())
	}
	for i := 1; i < files.logMaxFiles; i++ {
		_ = os.Remove(rotatedLog(files.log, i))
	}
	_ = os.Remove(files.pid)
	_ = os.Remove(files.exit)
	cmd, err := p.a.podInitCmd(p.netnsPath(), tokenDir, p.resolvConfPath(), dir, files, mounts, argv)
	if err != nil {
		return 0, 0, err
	}
	cmd.Env = env
	// What pod init says before the monitor takes over goes to the log
	// as plain lines.
	logf, err := os.OpenFile(files.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, 0, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	c.event(corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.spec.Image)
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("start %s: %w", argv[0], err)
	}
	c.event(corev1.EventTypeNormal, "Created", "Created container: %s", c.spec.Name)
	c.event(corev1.EventTypeNormal, "Started", "Started container %s", c.spec.Name)
	r := &process{proc: cmd.Process, startedAt: metav1.Now(), wait: func() exitStatus { return exitStatusOf(cmd.Wait()) }}
	c.mu.Lock()
	c.imageID = "kuberpc-image://" + img.Ref
	c.mu.Unlock()
	return c.watch(r)
}

// process is one run of a container's process: its monitor, started by
// this agent or adopted from an earlier one.
type process struct {
	proc      *os.Process // the monitor, leader of the process group
	startedAt metav1.Time
	wait      func() exitStatus
}

// watch reports the process running, probes it until it exits, and
// records how it ended. It returns how long the process ran and its exit
// code.
func (c *container) watch(r *process) (time.Duration, int32, error) {
	p := c.p
	exitCh := make(chan struct{})
	c.mu.Lock()
	c.proc = r.proc
	c.pid = 0
	c.exitCh = exitCh
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: r.startedAt}}
	c.ready = false
	c.started = c.spec.StartupProbe == nil
	c.lastCPU, c.lastCPUAt = 0, time.Time{}
	c.mu.Unlock()
	if err := c.saveState(r); err != nil {
		p.a.log.Warn("save container state", "pod", p.pod.Name, "container", c.spec.Name, "err", err)
	}
	p.changed()
	go c.publishPID(exitCh)

	oomBefore := c.oomKills()
	probeCtx, stopProbes := context.WithCancel(p.ctx)
	c.startProbes(probeCtx)
	st := r.wait()
	stopProbes()
	close(exitCh)

	reason := "Completed"
	if st.ExitCode != 0 {
		reason = "Error"
	}
	if st.Signal == int(syscall.SIGKILL) && c.oomKills() > oomBefore {
		reason = "OOMKilled"
		c.event(corev1.EventTypeWarning, "OOMKilled", "Container %s exceeded its memory limit %s and was killed",
			c.spec.Name, c.spec.Resources.Limits.Memory())
	}
	term := &corev1.ContainerStateTerminated{ExitCode: st.ExitCode, Signal: int32(st.Signal), Reason: reason,
		StartedAt: r.startedAt, FinishedAt: metav1.NewTime(st.FinishedAt)}
	if st.ExitCode != 0 && reason != "OOMKilled" {
		term.Message = logTail(c.logPath, 5)
		if st.ExitCode == 127 && strings.Contains(term.Message, "kuberpc pod init:") {
			term.Reason = "StartError"
		}
	}
	c.mu.Lock()
	c.state = corev1.ContainerState{Terminated: term}
	c.lastState = corev1.ContainerState{Terminated: term.DeepCopy()}
	c.ready = false
	c.mu.Unlock()
	p.changed()
	return time.Since(r.startedAt.Time), st.ExitCode, nil
}

// oomKills is how many processes the kernel killed in the container's
// cgroup for its memory limit.
func (c *container) oomKills() uint64 {
	if c.p.a.cgroups == "" {
		return 0
	}
	s, _ := statCgroup(c.p.a.cgroups, containerCgroup(c.p.pod, c.spec.Name))
	return s.oomKills
}

// publishPID publishes the pod's status again once the monitor has
// written the run's pid, of which the container's ID is made: the status
// went out as the run began, before that, and a pod whose status changes
// no more (no probes) would never show its ID. It gives up when the run
// ends, or after pidWait.
func (c *container) publishPID(exitCh <-chan struct{}) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for end := time.Now().Add(pidWait); time.Now().Before(end); {
		select {
		case <-exitCh:
			return
		case <-t.C:
		}
		c.mu.Lock()
		pid := c.pidLocked()
		c.mu.Unlock()
		if pid != 0 {
			c.p.changed()
			return
		}
	}
}

// pidWait is how long publishPID waits for a run's pid file.
const pidWait = 30 * time.Second

// pidLocked returns the pid of the current run's process, which its
// monitor writes to the pid file once it has started it; 0 before. The
// caller holds c.mu.
func (c *container) pidLocked() int {
	if c.pid == 0 && c.proc != nil {
		if b, err := os.ReadFile(c.files().pid); err == nil {
			c.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	return c.pid
}

// files are the container's monitor files, in its pod's directory, and
// its cgroup.
func (c *container) files() monitorFiles {
	base := filepath.Join(c.p.dir, c.spec.Name)
	f := monitorFiles{log: c.logPath, pid: base + ".pid", exit: base + ".exit",
		logMaxSize: c.p.a.cfg.ContainerLogMaxSize, logMaxFiles: c.p.a.cfg.ContainerLogMaxFiles}
	if mode := c.p.a.cgroups; mode != "" {
		f.cgroup, f.cgroupMode = containerCgroup(c.p.pod, c.spec.Name), mode
	}
	return f
}

func (c *container) previousLogPath() string {
	return filepath.Join(c.p.dir, c.spec.Name+".previous.log")
}

// commandLine applies Kubernetes' rules: command replaces the image's
// entrypoint, args replace its arguments; $(VAR) expands from the
// container's environment.
func (c *container) commandLine(img images.Image) ([]string, []string, error) {
	env, err := c.environment(img)
	if err != nil {
		return nil, nil, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	var argv []string
	if len(c.spec.Command) > 0 {
		argv = append(argv, c.spec.Command...)
		argv = append(argv, c.spec.Args...)
	} else {
		argv = append(argv, img.Entrypoint...)
		if len(c.spec.Args) > 0 {
			argv = append(argv, c.spec.Args...)
		} else {
			argv = append(argv, img.Args...)
		}
	}
	for i := range argv {
		argv[i] = expand(argv[i], vars)
	}
	if len(argv) == 0 {
		return nil, nil, errors.New("no command: the image has no entrypoint and the container sets no command")
	}
	return argv, env, nil
}

// environment is the process environment: a base PATH, the image's env,
// the Kubernetes service variables, the pod identity, then the container's
// env (which wins).
func (c *container) environment(img images.Image) ([]string, error) {
	p := c.p
	a := p.a
	pod := p.pod
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	// A container does not see the host's home directory (and its
	// ~/.kube/config, which would point in-cluster clients at the host's
	// loopback): each pod gets an empty one.
	home := filepath.Join(p.dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	set("HOME", home)
	set("HOSTNAME", pod.Name)
	for _, kv := range img.Env {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	gw := a.gateway.String()
	port := strconv.Itoa(a.cfg.APIServerPort)
	set("KUBERNETES_SERVICE_HOST", gw)
	set("KUBERNETES_SERVICE_PORT", port)
	set("KUBERNETES_SERVICE_PORT_HTTPS", port)
	set("KUBERNETES_PORT", "tcp://"+gw+":"+port)
	set("POD_NAME", pod.Name)
	set("POD_NAMESPACE", pod.Namespace)
	set("POD_IP", p.ip.String())
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	for _, from := range c.spec.EnvFrom {
		data, err := a.envSource(ctx, pod.Namespace, from)
		if err != nil {
			return nil, err
		}
		for k, v := range data {
			set(from.Prefix+k, v)
		}
	}
	for _, e := range c.spec.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vars))
			continue
		}
		v, err := a.envValue(ctx, p, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		set(e.Name, v)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

// expand replaces $(NAME) with vars[NAME] when defined; $$ escapes.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if j := strings.IndexByte(s[i+2:], ')'); j >= 0 {
					name := s[i+2 : i+2+j]
					if v, ok := vars[name]; ok {
						b.WriteString(v)
						i += j + 2
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// stop ends the container for good: the preStop hook (when graceful), then
// SIGTERM to its process group, then SIGKILL at deadline.
func (c *container) stop(deadline time.Time, graceful bool) {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return
	}
	c.stopping = true
	close(c.stopCh)
	proc, exitCh, running := c.proc, c.exitCh, c.state.Running != nil
	c.mu.Unlock()
	if !running || proc == nil {
		return
	}
	if graceful && c.spec.Lifecycle != nil && c.spec.Lifecycle.PreStop != nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		if err := c.runLifecycle(ctx, c.spec.Lifecycle.PreStop); err != nil {
			c.p.a.log.Warn("preStop hook failed", "pod", c.p.pod.Name, "container", c.spec.Name, "err", err)
			c.event(corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %v", err)
		}
		cancel()
	}
	c.event(corev1.EventTypeNormal, "Killing", "Stopping container %s", c.spec.Name)
	_ = syscall.Kill(-proc.Pid, syscall.SIGTERM)
	select {
	case <-exitCh:
	case <-time.After(time.Until(deadline)):
		_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
		<-exitCh
	}
}

// kill restarts the container after a failed liveness or startup probe:
// SIGTERM, then SIGKILL after the pod's grace period.
func (c *container) kill(why string) {
	c.mu.Lock()
	proc, exitCh := c.proc, c.exitCh
	c.mu.Unlock()
	if proc == nil {
		return
	}
	c.p.a.log.Info("killing container", "pod", c.p.pod.Name, "container", c.spec.Name, "reason", why)
	c.event(corev1.EventTypeNormal, "Killing", "Container %s %s, will be restarted", c.spec.Name, why)
	grace := 30 * time.Second
	if g := c.p.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	_ = syscall.Kill(-proc.Pid, syscall.SIGTERM)
	select {
	case <-exitCh:
	case <-time.After(grace):
		_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
	}
}

type usage struct{ cpuNanos, nanoCores, rss uint64 }

// usage reads the container's CPU time and working set from its cgroup,
// or, on a host without cgroups, its process's from /proc.
func (c *container) usage() usage {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.state.Running == nil {
		return usage{}
	}
	pid := c.pidLocked()
	if pid == 0 {
		return usage{}
	}
	var u usage
	if mode := c.p.a.cgroups; mode != "" {
		if s, err := statCgroup(mode, containerCgroup(c.p.pod, c.spec.Name)); err == nil {
			u.cpuNanos, u.rss = s.cpuNanos, s.workingSet
		}
	} else if f := procStat(pid); len(f) > 22 {
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		u.cpuNanos = (ut + st) * uint64(time.Second/100) // USER_HZ is 100 on Linux
		rssPages, _ := strconv.ParseUint(f[21], 10, 64)
		u.rss = rssPages * uint64(os.Getpagesize())
	}
	now := time.Now()
	if !c.lastCPUAt.IsZero() && u.cpuNanos >= c.lastCPU {
		if dt := now.Sub(c.lastCPUAt); dt > 0 {
			c.nanoCores = uint64(float64(u.cpuNanos-c.lastCPU) / dt.Seconds())
		}
	}
	c.lastCPU, c.lastCPUAt = u.cpuNanos, now
	u.nanoCores = c.nanoCores
	return u
}

// logTail returns the last n lines of the container log file.
func logTail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = parseLogLine(l).content
	}
	return strings.Join(lines, "\n")
}
