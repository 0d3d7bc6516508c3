package example_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/server"
)

// exercise makes the same calls on any server: two SayHello, one
// Greetings stream, one call that fails.
func exercise(t *testing.T, addr string) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := example.NewExampleServiceClient(cc)
	for range 2 {
		if _, err := c.SayHello(ctx, &example.Request{Name: "m"}, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := example.NewStreamServiceClient(cc).Greetings(ctx, &example.Request{Name: "m", Id: 2})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
	bad, _ := example.NewStreamServiceClient(cc).Greetings(ctx, &example.Request{Name: "m", Id: -1})
	if _, err := bad.Recv(); err == nil {
		t.Fatal("Greetings(-1) succeeded")
	}
}

// scrape returns the non-zero series of url as "name{labels}" → value
// (a histogram's sample count), for the grpc_server_* families.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err = http.Get(url); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s is not Prometheus text: %v", url, err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		if !strings.HasPrefix(name, "grpc_server_") {
			continue
		}
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				if l.GetName() == "grpc_service" && strings.HasPrefix(l.GetValue(), "grpc.") {
					ls = nil
					break // health and reflection differ in what each runtime serves
				}
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			if ls == nil {
				continue
			}
			slices.Sort(ls)
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			if v == 0 {
				continue // Go creates every code's series up front
			}
			out[name+"{"+strings.Join(ls, ",")+"}"] = v
		}
	}
	return out
}

// TestPythonMetricsMatchGo: after the same calls, the Python runtime's
// /metrics has exactly the Go runtime's grpc_server_* series (names,
// labels, codes) with the same counts.
func TestPythonMetricsMatchGo(t *testing.T) {
	// Go.
	reg := prometheus.NewRegistry()
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = 0
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(reg), server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	example.RegisterStreamServiceServer(srv, example.Greeter{})
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	go srv.ServeHTTP(hl)
	defer srv.Shutdown(context.Background())
	exercise(t, lis.Addr().String())
	goSeries := scrape(t, "http://"+hl.Addr().String()+"/metrics")

	// Python.
	port, mport := freePort(t), freePort(t)
	cmd := exec.Command(python, filepath.Join("python", "server.py"))
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), fmt.Sprintf("METRICS_PORT=%d", mport), "DRAIN_DELAY=0", "DRAIN_TIMEOUT=1s")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	exercise(t, fmt.Sprintf("127.0.0.1:%d", port))
	pySeries := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))

	for k, v := range goSeries {
		if pv, ok := pySeries[k]; !ok || pv != v {
			t.Errorf("Go has %s = %v; Python has %v (present %v)", k, v, pv, ok)
		}
	}
	for k := range pySeries {
		if _, ok := goSeries[k]; !ok {
			t.Errorf("Python has %s; Go does not", k)
		}
	}
	if len(goSeries) != 7 {
		t.Errorf("%d Go series compared, want 7 (started, handled by code, latency of SayHello and Greetings): %v", len(goSeries), goSeries)
	}
}
