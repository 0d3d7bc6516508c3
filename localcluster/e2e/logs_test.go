package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent"
)

// TestContainerLogsRotate: a container that writes about 60 MiB of
// output keeps the kubelet's 5 files of 10 MiB at most on the node's
// disk, and kubectl logs, through the apiserver, shows the newest file:
// its last line, and none of the first ones.
func TestContainerLogsRotate(t *testing.T) {
	ns := env.Namespace(t)
	registerPython(t)
	const lines = 450_000 // of about 147 bytes each in the log
	createPod(t, ns, pythonPod("chatty", "import time\nx = 'x' * 99\nfor i in range("+strconv.Itoa(lines)+"):\n    print(i, x)\nprint('done', flush=True)\ntime.sleep(600)",
		corev1.ResourceRequirements{}))
	clustertest.WaitFor(t, 60*time.Second, "the last line in kubectl logs --tail=1", func() (bool, string) {
		out, err := env.KubectlErr(ns, "", "logs", "--tail=1", "chatty")
		return err == nil && out == "done\n", out
	})
	out := env.Kubectl(t, ns, "", "logs", "chatty")
	if len(out) > nodeagent.DefaultContainerLogMaxSize {
		t.Errorf("kubectl logs returned %d bytes; want at most the newest file's %d", len(out), nodeagent.DefaultContainerLogMaxSize)
	}
	first, _, _ := strings.Cut(out, " ")
	if n, err := strconv.Atoi(first); err != nil || n == 0 {
		t.Errorf("kubectl logs begins with %.40q; want a line from after the first rotation", out)
	}
	files, err := filepath.Glob(filepath.Join(env.Cluster.StateDir, "node", "pods", ns+"_chatty_*", "c.log*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("the pod's log files: %v, %v", files, err)
	}
	if len(files) != nodeagent.DefaultContainerLogMaxFiles {
		t.Errorf("%d log files: %v; want %d, the oldest dropped", len(files), files, nodeagent.DefaultContainerLogMaxFiles)
	}
	var total int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		// A file is rotated after the record that passes the size.
		if st.Size() > nodeagent.DefaultContainerLogMaxSize+16<<10 {
			t.Errorf("%s holds %d bytes; want at most %d and a record", f, st.Size(), nodeagent.DefaultContainerLogMaxSize)
		}
		total += st.Size()
	}
	t.Logf("%d files, %.1f MiB on disk; kubectl logs %.1f MiB", len(files), float64(total)/(1<<20), float64(len(out))/(1<<20))
	if total < 4*nodeagent.DefaultContainerLogMaxSize {
		t.Errorf("the files hold %d bytes; want the 4 rotated ones full", total)
	}
}
