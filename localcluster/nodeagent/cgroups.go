package nodeagent

import (
	"errors"
	"fmt"
	"os"
	"path"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
)

// Each container runs in a cgroup of its own, /kuberpc/POD-UID/NAME in the
// cpu, cpuacct and memory hierarchies (cgroup v1) or the unified one
// (v2): its CPU request becomes its share of contended CPU, its CPU limit
// a CFS quota, its memory limit a hard limit whose breach the kernel
// answers with an OOM kill, reported as OOMKilled. The container's
// monitor joins the cgroup before it starts the process (so the process
// is in it from its first instruction); its own few MiB count with it.

// cgroupRoot is the parent of the pods' cgroups.
const cgroupRoot = "/kuberpc"

// cgroupMode is how this host offers cgroups: "v1", "v2", or "" (neither
// usable: pods run without resource enforcement, and the node says so).
func cgroupMode() string {
	switch cgroups.Mode() {
	case cgroups.Legacy, cgroups.Hybrid:
		if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
			return "v1"
		}
	case cgroups.Unified:
		return "v2"
	}
	return ""
}

// v1Hierarchy is the v1 subsystems kuberpc uses: cpu, cpuacct, memory.
func v1Hierarchy() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	var use []cgroup1.Subsystem
	for _, s := range all {
		switch s.Name() {
		case cgroup1.Cpu, cgroup1.Cpuacct, cgroup1.Memory:
			use = append(use, s)
		}
	}
	if len(use) != 3 {
		return nil, fmt.Errorf("cgroup v1: want the cpu, cpuacct and memory hierarchies, found %d of them", len(use))
	}
	return use, nil
}

// containerCgroup is the cgroup path of a pod's container.
func containerCgroup(pod *corev1.Pod, container string) string {
	return path.Join(cgroupRoot, string(pod.UID), container)
}

// limits are a container's resources as the kernel takes them.
type limits struct {
	shares      uint64 // cpu.shares (v1); cpu.weight derives from it (v2)
	quota       int64  // CFS quota per period, µs; 0: none
	memoryBytes int64  // 0: none
}

// cfsPeriod is the CFS period, 100 ms as the kubelet sets it.
const cfsPeriod = 100000

// limitsOf converts a container's requests and limits as the kubelet
// does: shares = request millicores × 1024 / 1000 (at least 2, what a
// container without a request gets), quota = limit millicores × period /
// 1000 (at least 1 ms).
func limitsOf(r corev1.ResourceRequirements) limits {
	l := limits{shares: 2}
	cpuReq, ok := r.Requests[corev1.ResourceCPU]
	if !ok {
		cpuReq, ok = r.Limits[corev1.ResourceCPU] // the API's default
	}
	if ok {
		l.shares = max(uint64(cpuReq.MilliValue())*1024/1000, 2)
	}
	if lim, ok := r.Limits[corev1.ResourceCPU]; ok {
		l.quota = max(lim.MilliValue()*cfsPeriod/1000, 1000)
	}
	if mem, ok := r.Limits[corev1.ResourceMemory]; ok {
		l.memoryBytes = mem.Value()
	}
	return l
}

// weight is cpu.weight (v2) for shares, the kubelet's conversion.
func (l limits) weight() uint64 { return 1 + ((l.shares-2)*9999)/262142 }

// createCgroup creates (or updates) the cgroup at p with l.
func createCgroup(mode, p string, l limits) error {
	switch mode {
	case "v1":
		res := &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &l.shares}, Memory: &specs.LinuxMemory{}}
		if l.quota > 0 {
			period := uint64(cfsPeriod)
			res.CPU.Quota, res.CPU.Period = &l.quota, &period
		}
		if l.memoryBytes > 0 {
			res.Memory.Limit = &l.memoryBytes
		}
		_, err := cgroup1.New(cgroup1.StaticPath(p), res, cgroup1.WithHierarchy(v1Hierarchy))
		return err
	case "v2":
		w := l.weight()
		res := &cgroup2.Resources{CPU: &cgroup2.CPU{Weight: &w}, Memory: &cgroup2.Memory{}}
		if l.quota > 0 {
			period := uint64(cfsPeriod)
			res.CPU.Max = cgroup2.NewCPUMax(&l.quota, &period)
		}
		if l.memoryBytes > 0 {
			res.Memory.Max = &l.memoryBytes
		}
		_, err := cgroup2.NewManager("/sys/fs/cgroup", p, res)
		return err
	}
	return nil
}

// joinCgroup moves process pid into the cgroup at p.
func joinCgroup(mode, p string, pid int) error {
	switch mode {
	case "v1":
		cg, err := cgroup1.Load(cgroup1.StaticPath(p), cgroup1.WithHierarchy(v1Hierarchy))
		if err != nil {
			return err
		}
		return cg.Add(cgroup1.Process{Pid: pid})
	case "v2":
		m, err := cgroup2.Load(p)
		if err != nil {
			return err
		}
		return m.AddProc(uint64(pid))
	}
	return nil
}

// cgroupStats is what a container's cgroup says of its use.
type cgroupStats struct {
	cpuNanos   uint64 // CPU time used, ns
	workingSet uint64 // memory in use minus inactive file cache, as the kubelet's working set
	oomKills   uint64
}

// statCgroup reads the cgroup at p.
func statCgroup(mode, p string) (cgroupStats, error) {
	var s cgroupStats
	switch mode {
	case "v1":
		cg, err := cgroup1.Load(cgroup1.StaticPath(p), cgroup1.WithHierarchy(v1Hierarchy))
		if err != nil {
			return s, err
		}
		m, err := cg.Stat(cgroup1.IgnoreNotExist)
		if err != nil {
			return s, err
		}
		s.cpuNanos = m.GetCPU().GetUsage().GetTotal()
		mem := m.GetMemory()
		s.workingSet = mem.GetUsage().GetUsage() - min(mem.GetUsage().GetUsage(), mem.GetTotalInactiveFile())
		s.oomKills = m.GetMemoryOomControl().GetOomKill()
	case "v2":
		mgr, err := cgroup2.Load(p)
		if err != nil {
			return s, err
		}
		m, err := mgr.Stat()
		if err != nil {
			return s, err
		}
		s.cpuNanos = m.GetCPU().GetUsageUsec() * 1000
		mem := m.GetMemory()
		s.workingSet = mem.GetUsage() - min(mem.GetUsage(), mem.GetInactiveFile())
		s.oomKills = m.GetMemoryEvents().GetOomKill()
	default:
		return s, errors.New("no cgroups on this host")
	}
	return s, nil
}

// removeCgroup removes the cgroup at p and, once empty, its pod's.
func removeCgroup(mode, p string) {
	for _, q := range []string{p, path.Dir(p)} {
		switch mode {
		case "v1":
			if cg, err := cgroup1.Load(cgroup1.StaticPath(q), cgroup1.WithHierarchy(v1Hierarchy)); err == nil {
				_ = cg.Delete()
			}
		case "v2":
			if m, err := cgroup2.Load(q); err == nil {
				_ = m.Delete()
			}
		}
	}
}
