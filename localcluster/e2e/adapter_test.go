package e2e

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// TestCustomMetricsAdapter: kuberpc's adapter, registered through the
// aggregation layer, serves each pod's request rate from its metrics
// endpoint: a pod sent 50 calls/s reads about 50, its idle neighbour
// about 0. An unknown metric and a pod whose "metrics" port serves
// something else get errors that say so, and the adapter keeps serving.
func TestCustomMetricsAdapter(t *testing.T) {
	ns := env.Namespace(t)
	pods := env.DeployExample(t, ns, 2, "kuberpc.local/example:v1")
	busy := pods[0]
	if err := podnet.CheckRouted(podnet.Default, net.ParseIP(busy.Status.PodIP)); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(busy.Status.PodIP, "50051"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		req := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "adapter")
		tick := time.NewTicker(20 * time.Millisecond) // 50 calls/s
		defer tick.Stop()
		for n := 0; n < 50*60; n++ { // bounded: at most a minute
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var resp []byte
			_ = cc.Invoke(ctx, "/example.ExampleService/SayHello", &req, &resp, grpc.ForceCodecV2(rawCodec{}))
		}
	}()
	var got map[string]float64
	clustertest.WaitFor(t, 45*time.Second, "about 50 requests/s for the busy pod, about 0 for the other", func() (bool, string) {
		got, err = env.CustomMetric(ns, "grpc_server_requests_per_second")
		if err != nil {
			return false, err.Error()
		}
		b, i := got[busy.Name], got[pods[1].Name]
		_, idleOK := got[pods[1].Name]
		return b > 40 && b < 60 && idleOK && i < 1, strings.TrimSpace(strings.ReplaceAll(jsonString(got), "\n", " "))
	})
	t.Logf("grpc_server_requests_per_second: %v", got)

	_, err = env.CustomMetric(ns, "grpc_server_nonsense")
	if err == nil || !strings.Contains(err.Error(), `no metric "grpc_server_nonsense" for pods`) {
		t.Errorf("an unknown metric: %v; want an error naming it", err)
	}

	// A pod whose metrics port serves HTML: no value, a reason, and the
	// adapter keeps answering for the others.
	registerPython(t)
	bad := pythonPod("not-metrics", "import http.server as h; h.test(HandlerClass=h.SimpleHTTPRequestHandler, port=9090, bind='0.0.0.0')", corev1.ResourceRequirements{})
	bad.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}}
	createPod(t, ns, bad)
	waitContainer(t, ns, "not-metrics", "running", func(cs corev1.ContainerStatus, _ *corev1.Pod) bool { return cs.State.Running != nil })
	time.Sleep(5 * time.Second) // a few scrapes
	_, err = env.GetRaw("/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + ns + "/pods/not-metrics/grpc_server_requests_per_second")
	if err == nil || !strings.Contains(err.Error(), "metrics endpoint failed") {
		t.Errorf("the pod serving HTML on its metrics port: %v; want an error saying its metrics endpoint failed", err)
	}
	if got, err := env.CustomMetric(ns, "grpc_server_requests_per_second"); err != nil || got[busy.Name] == 0 {
		t.Errorf("after the bad pod: %v, %v; want the busy pod's rate still served", got, err)
	}
}

func jsonString(v any) string { b, _ := json.Marshal(v); return string(b) }
