package kubernetes_test

import (
	"encoding/json"
	"net/netip"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"

	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// FuzzParseTarget: any endpoint string parses or is refused with an
// error, never a panic; a parsed target formats back to one that parses
// to the same.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"example.default:grpc", "/example:50051", "a.b:0", "x:", ":1", "a.b.c:grpc", "Ex:1", "a:99999", "a:-1", "a.b:grpc:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, endpoint string) {
		tg, err := kuberesolver.ParseTarget(endpoint)
		if err != nil {
			return
		}
		again, err := kuberesolver.ParseTarget(tg.String())
		if err != nil || again != tg {
			t.Fatalf("ParseTarget(%q) = %+v, whose String %q parses to %+v, %v", endpoint, tg, tg.String(), again, err)
		}
	})
}

// FuzzMerge: any set of EndpointSlices (as JSON) merges without a panic
// into valid, distinct addresses, and the counts add up.
func FuzzMerge(f *testing.F) {
	seed, _ := json.Marshal([]*discoveryv1.EndpointSlice{
		slice("a", grpcPort, ready("198.18.0.1"), notReady("198.18.0.2"), terminating("198.18.0.3")),
		slice("b", grpcPort, ready("198.18.0.1"), ep{ip: "198.18.0.4", ready: ptr(true), zone: "z1"}),
	})
	f.Add(seed, "z1")
	f.Add([]byte(`[{"endpoints":[{"addresses":["not-an-ip"]}],"ports":[{"name":"grpc","port":1}]},null]`), "")
	f.Add([]byte(`[{"endpoints":[{"addresses":[]},{"addresses":["198.18.0.9"],"conditions":{}}],"ports":[{"name":"grpc"}]}]`), "")
	target := kuberesolver.Target{Service: "example", Namespace: "default", PortName: "grpc"}
	f.Fuzz(func(t *testing.T, data []byte, zone string) {
		var slices []*discoveryv1.EndpointSlice
		if json.Unmarshal(data, &slices) != nil {
			return
		}
		for i, s := range slices {
			if s != nil && s.Name == "" {
				s.Name = string(rune('a' + i%26))
			}
		}
		eps, counts := kuberesolver.Merge(slices, target, zone)
		seen := map[string]bool{}
		for _, e := range eps {
			if len(e.Addresses) != 1 {
				t.Fatalf("endpoint with %d addresses", len(e.Addresses))
			}
			a := e.Addresses[0].Addr
			if _, err := netip.ParseAddrPort(a); err != nil {
				t.Fatalf("endpoint address %q: %v", a, err)
			}
			if seen[a] {
				t.Fatalf("address %s twice", a)
			}
			seen[a] = true
		}
		if counts.Ready < 0 || counts.NotReady < 0 || counts.ServingTerminating < 0 || len(eps) > counts.Ready+counts.ServingTerminating {
			t.Fatalf("%d endpoints with counts %+v", len(eps), counts)
		}
	})
}
