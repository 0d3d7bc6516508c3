package e2e

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/kuberpc/kuberpc/localcluster/clustertest"
	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// sayHello calls SayHello on a pod address, after checking that the
// address is routed through the cluster's bridge.
func sayHello(t *testing.T, ip string, name string) (string, error) {
	t.Helper()
	if err := podnet.CheckRouted(podnet.Default, net.ParseIP(ip)); err != nil {
		t.Fatalf("refusing to send traffic to %s: %v", ip, err)
	}
	return sayHelloAt(net.JoinHostPort(ip, "50051"), name)
}

// sayHelloAt calls SayHello at addr on a new connection; the caller has
// checked that addr is routed through the cluster's bridge.
func sayHelloAt(addr, name string) (string, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// example.Request{name = 2}, encoded by hand: this module does not
	// import the kuberpc module's generated code.
	req := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), name)
	var resp []byte
	if err := cc.Invoke(ctx, "/example.ExampleService/SayHello", &req, &resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		return "", err
	}
	// example.Response{message = 1}
	for len(resp) > 0 {
		num, typ, n := protowire.ConsumeTag(resp)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		resp = resp[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeString(resp)
			if n < 0 {
				return "", protowire.ParseError(n)
			}
			return v, nil
		}
		n = protowire.ConsumeFieldValue(num, typ, resp)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		resp = resp[n:]
	}
	return "", nil
}

// rawCodec passes already-encoded protobuf bytes through.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// sliceRecorder records every endpoint condition seen in a namespace's
// EndpointSlices, through an informer on the real apiserver.
type sliceRecorder struct {
	mu   sync.Mutex
	seen map[string]map[string]bool // address -> "ready=..,serving=..,terminating=.." seen
	stop chan struct{}
}

func recordSlices(t *testing.T, ns string) *sliceRecorder {
	r := &sliceRecorder{seen: map[string]map[string]bool{}, stop: make(chan struct{})}
	f := informers.NewSharedInformerFactoryWithOptions(env.Client, 0, informers.WithNamespace(ns))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	record := func(obj any) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, e := range s.Endpoints {
			c := fmt.Sprintf("ready=%v,serving=%v,terminating=%v", clustertest.IsTrue(e.Conditions.Ready), clustertest.IsTrue(e.Conditions.Serving), clustertest.IsTrue(e.Conditions.Terminating))
			for _, a := range e.Addresses {
				if r.seen[a] == nil {
					r.seen[a] = map[string]bool{}
				}
				r.seen[a][c] = true
			}
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: record, UpdateFunc: func(_, n any) { record(n) }})
	f.Start(r.stop)
	f.WaitForCacheSync(r.stop)
	t.Cleanup(func() { close(r.stop) })
	return r
}

// reset forgets what was seen so far.
func (r *sliceRecorder) reset() {
	r.mu.Lock()
	r.seen = map[string]map[string]bool{}
	r.mu.Unlock()
}

// saw reports whether address was seen with conditions c.
func (r *sliceRecorder) saw(address, c string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[address][c]
}

func (r *sliceRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.seen)
}
