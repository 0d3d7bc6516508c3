package bench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/examples/example/exampletest"
)

// pythonServer starts the Python grpcio example server and returns its
// address and a stop function.
func pythonServer() (string, func(), error) {
	_, file, _, _ := callerFile()
	script := filepath.Join(filepath.Dir(file), "..", "examples", "example", "python", "server.py")
	cmd := exec.Command("/usr/bin/python3", script)
	// PORT=0: the server binds a free port and prints it; a port picked
	// here and freed could be taken before the server binds it.
	cmd.Env = append(os.Environ(), "PORT=0", "METRICS_PORT=-1", "DRAIN_DELAY=0", "DRAIN_TIMEOUT=1")
	srv, err := exampletest.StartServer(cmd, 30*time.Second)
	if err != nil {
		return "", nil, fmt.Errorf("the Python server: %w", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", srv.Port), func() { srv.Stop(10 * time.Second) }, nil
}

// PythonInterop measures the same kuberpc client against the Python
// grpcio example server and the Go one: context, not a goal.
func PythonInterop(s Scale, progress io.Writer) ([]Row, error) {
	addr, stop, err := pythonServer()
	if err != nil {
		return nil, err
	}
	defer stop()
	py, err := client.Dial("passthrough:///"+addr, client.WithRegistry(prometheus.NewRegistry()))
	if err != nil {
		return nil, err
	}
	defer py.Close()
	gosrv, err := KuberpcConn(nil)
	if err != nil {
		return nil, err
	}
	defer gosrv.Close()
	req := &example.Request{Id: 1, Name: "interop"}
	var pq, gq, pp, gp []float64
	for range s.Rounds {
		a, err := unaryRound(example.NewExampleServiceClient(py), req, s.Calls, 8)
		if err != nil {
			return nil, fmt.Errorf("python: %w", err)
		}
		b, err := unaryRound(example.NewExampleServiceClient(gosrv), req, s.Calls, 8)
		if err != nil {
			return nil, err
		}
		pq, gq, pp, gp = append(pq, a.qps), append(gq, b.qps), append(pp, a.p99), append(gp, b.p99)
	}
	fmt.Fprintln(progress, "python interop: done")
	return []Row{
		ratioRow("python interop", "Python grpcio server ÷ Go kuberpc server, c=8", "QPS", "", pq, gq),
		ratioRow("python interop", "Python grpcio server ÷ Go kuberpc server, c=8", "p99", "", pp, gp),
	}, nil
}

func callerFile() (uintptr, string, int, bool) { return runtime.Caller(0) }
