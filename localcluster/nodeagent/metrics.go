package nodeagent

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// resourceMetrics are the kubelet resource metrics (the names and labels
// metrics-server reads) at now.
func (a *Agent) resourceMetrics(now time.Time) []*dto.MetricFamily {
	ts := proto.Int64(now.UnixMilli())
	family := func(name, help string, t dto.MetricType) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: t.Enum()}
	}
	sample := func(f *dto.MetricFamily, v float64, labels ...string) {
		m := &dto.Metric{TimestampMs: ts}
		for i := 0; i+1 < len(labels); i += 2 {
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(labels[i]), Value: proto.String(labels[i+1])})
		}
		if f.GetType() == dto.MetricType_COUNTER {
			m.Counter = &dto.Counter{Value: proto.Float64(v)}
		} else {
			m.Gauge = &dto.Gauge{Value: proto.Float64(v)}
		}
		f.Metric = append(f.Metric, m)
	}
	nodeCPU := family("node_cpu_usage_seconds_total", "Cumulative cpu time consumed by the node in core-seconds", dto.MetricType_COUNTER)
	nodeMem := family("node_memory_working_set_bytes", "Current working set of the node in bytes", dto.MetricType_GAUGE)
	podCPU := family("pod_cpu_usage_seconds_total", "Cumulative cpu time consumed by the pod in core-seconds", dto.MetricType_COUNTER)
	podMem := family("pod_memory_working_set_bytes", "Current working set of the pod in bytes", dto.MetricType_GAUGE)
	ctrCPU := family("container_cpu_usage_seconds_total", "Cumulative cpu time consumed by the container in core-seconds", dto.MetricType_COUNTER)
	ctrMem := family("container_memory_working_set_bytes", "Current working set of the container in bytes", dto.MetricType_GAUGE)
	ctrStart := family("container_start_time_seconds", "Start time of the container since unix epoch in seconds", dto.MetricType_GAUGE)
	scrapeErr := family("scrape_error", "1 if there was an error while getting container metrics, 0 otherwise", dto.MetricType_GAUGE)

	if cpu, ok := hostCPUSeconds(); ok {
		sample(nodeCPU, cpu)
	}
	if mem, ok := hostWorkingSet(); ok {
		sample(nodeMem, float64(mem))
	}
	for _, p := range a.podList() {
		ns, name := p.pod.Namespace, p.pod.Name
		var cpu, mem float64
		running := 0
		for _, c := range p.containers {
			c.mu.Lock()
			st := c.state.Running
			c.mu.Unlock()
			if st == nil {
				continue
			}
			u := c.usage()
			running++
			cpu += float64(u.cpuNanos) / 1e9
			mem += float64(u.rss)
			sample(ctrCPU, float64(u.cpuNanos)/1e9, "container", c.spec.Name, "namespace", ns, "pod", name)
			sample(ctrMem, float64(u.rss), "container", c.spec.Name, "namespace", ns, "pod", name)
			sample(ctrStart, float64(st.StartedAt.Unix()), "container", c.spec.Name, "namespace", ns, "pod", name)
		}
		if running > 0 {
			sample(podCPU, cpu, "namespace", ns, "pod", name)
			sample(podMem, mem, "namespace", ns, "pod", name)
		}
	}
	sample(scrapeErr, 0)
	return []*dto.MetricFamily{nodeCPU, nodeMem, podCPU, podMem, ctrCPU, ctrMem, ctrStart, scrapeErr}
}

// hostCPUSeconds is the CPU time the host has spent busy (all but idle
// and iowait), in core-seconds, from /proc/stat.
func hostCPUSeconds() (float64, bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, false
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, false
	}
	var busy uint64
	for i, s := range fields[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return float64(busy) / 100, true // USER_HZ
}

// hostWorkingSet is the host's memory in use (MemTotal - MemAvailable).
func hostWorkingSet() (uint64, bool) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	var total, avail uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = v * 1024
		case "MemAvailable:":
			avail = v * 1024
		}
	}
	return total - min(total, avail), total > 0
}
