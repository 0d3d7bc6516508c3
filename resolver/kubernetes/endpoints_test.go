package kubernetes_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/resolver"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

func ptr[T any](v T) *T { return &v }

type ep struct {
	ip                          string
	ready, serving, terminating *bool
	zone                        string
	hints                       []string
}

func slice(name string, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4, Ports: ports}
	s.Name = name
	for _, e := range eps {
		d := discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating},
			Hints:      hints(e.hints),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: "pod-" + e.ip},
		}
		if e.zone != "" {
			d.Zone = ptr(e.zone)
		}
		s.Endpoints = append(s.Endpoints, d)
	}
	return s
}

var grpcPort = []discoveryv1.EndpointPort{{Name: ptr("grpc"), Port: ptr(int32(50051))}}

func addrs(eps []resolver.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Addresses[0].Addr)
	}
	slices.Sort(out)
	return out
}

func ready(ip string) ep {
	return ep{ip: ip, ready: ptr(true), serving: ptr(true), terminating: ptr(false)}
}
func notReady(ip string) ep {
	return ep{ip: ip, ready: ptr(false), serving: ptr(false), terminating: ptr(false)}
}
func terminating(ip string) ep {
	return ep{ip: ip, ready: ptr(false), serving: ptr(true), terminating: ptr(true)}
}
func terminated(ip string) ep {
	return ep{ip: ip, ready: ptr(false), serving: ptr(false), terminating: ptr(true)}
}
func nilConditions(ip string) ep { return ep{ip: ip} }

func TestMerge(t *testing.T) {
	t.Parallel()
	byName := kuberesolver.Target{Service: "example", Namespace: "default", PortName: "grpc"}
	byNumber := kuberesolver.Target{Service: "example", Namespace: "default", Port: 50051}
	for _, tc := range []struct {
		name   string
		target kuberesolver.Target
		zone   string
		slices []*discoveryv1.EndpointSlice
		want   []string
		counts kuberesolver.Counts
	}{
		{name: "ready only", target: byName,
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort, ready("198.18.0.1"), notReady("198.18.0.2"), terminating("198.18.0.3"))},
			want:   []string{"198.18.0.1:50051"}, counts: kuberesolver.Counts{Ready: 1, NotReady: 1, ServingTerminating: 1}},
		{name: "terminating-only fallback", target: byName,
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort, terminating("198.18.0.3"), terminated("198.18.0.4"), notReady("198.18.0.5"))},
			want:   []string{"198.18.0.3:50051"}, counts: kuberesolver.Counts{ServingTerminating: 1, NotReady: 2}},
		{name: "nothing usable", target: byName,
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort, terminated("198.18.0.4"), notReady("198.18.0.5"))},
			want:   nil, counts: kuberesolver.Counts{NotReady: 2}},
		{name: "nil conditions mean ready", target: byName,
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort, nilConditions("198.18.0.9"))},
			want:   []string{"198.18.0.9:50051"}, counts: kuberesolver.Counts{Ready: 1}},
		{name: "port by number", target: byNumber,
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort, ready("198.18.0.1"))},
			want:   []string{"198.18.0.1:50051"}, counts: kuberesolver.Counts{Ready: 1}},
		{name: "slice missing the port is skipped", target: byName,
			slices: []*discoveryv1.EndpointSlice{
				slice("a", grpcPort, ready("198.18.0.1")),
				slice("b", []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}}, ready("198.18.0.2")),
				slice("c", nil, ready("198.18.0.3")),
				slice("d", []discoveryv1.EndpointPort{{Name: ptr("grpc")}}, ready("198.18.0.4")), // nil port number
			},
			want: []string{"198.18.0.1:50051"}, counts: kuberesolver.Counts{Ready: 1, Skipped: 3}},
		{name: "duplicate address keeps best conditions", target: byName,
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort, notReady("198.18.0.1")), slice("b", grpcPort, ready("198.18.0.1"))},
			want:   []string{"198.18.0.1:50051"}, counts: kuberesolver.Counts{Ready: 1}},
		{name: "malformed address and nil slice", target: byName,
			slices: []*discoveryv1.EndpointSlice{nil, slice("a", grpcPort, ready("not-an-ip"), ready("198.18.0.1"))},
			want:   []string{"198.18.0.1:50051"}, counts: kuberesolver.Counts{Ready: 1, Skipped: 1}},
		{name: "same-zone preference with enough local endpoints", target: byName, zone: "z1",
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort,
				ep{ip: "198.18.0.1", ready: ptr(true), zone: "z1"}, ep{ip: "198.18.0.2", ready: ptr(true), zone: "z2"},
				ep{ip: "198.18.0.3", ready: ptr(true), zone: "z1"}, ep{ip: "198.18.0.4", ready: ptr(true), zone: "z2"})},
			want: []string{"198.18.0.1:50051", "198.18.0.3:50051"}, counts: kuberesolver.Counts{Ready: 4}},
		{name: "one local endpoint is too few: all zones", target: byName, zone: "z1",
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort,
				ep{ip: "198.18.0.1", ready: ptr(true), zone: "z1"}, ep{ip: "198.18.0.2", ready: ptr(true), zone: "z2"})},
			want: []string{"198.18.0.1:50051", "198.18.0.2:50051"}, counts: kuberesolver.Counts{Ready: 2}},
		{name: "local endpoints far below the zone's share: all zones", target: byName, zone: "z1",
			// 2 of 8 in z1 with 2 zones: each would take 2× the average load.
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort,
				ep{ip: "198.18.0.1", ready: ptr(true), zone: "z1"}, ep{ip: "198.18.0.2", ready: ptr(true), zone: "z1"},
				ep{ip: "198.18.0.3", ready: ptr(true), zone: "z2"}, ep{ip: "198.18.0.4", ready: ptr(true), zone: "z2"},
				ep{ip: "198.18.0.5", ready: ptr(true), zone: "z2"}, ep{ip: "198.18.0.6", ready: ptr(true), zone: "z2"},
				ep{ip: "198.18.0.7", ready: ptr(true), zone: "z2"}, ep{ip: "198.18.0.8", ready: ptr(true), zone: "z2"})},
			want:   []string{"198.18.0.1:50051", "198.18.0.2:50051", "198.18.0.3:50051", "198.18.0.4:50051", "198.18.0.5:50051", "198.18.0.6:50051", "198.18.0.7:50051", "198.18.0.8:50051"},
			counts: kuberesolver.Counts{Ready: 8}},
		{name: "hints on every endpoint are followed", target: byName, zone: "z1",
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort,
				ep{ip: "198.18.0.1", ready: ptr(true), zone: "z1", hints: []string{"z1"}}, ep{ip: "198.18.0.2", ready: ptr(true), zone: "z2", hints: []string{"z1"}},
				ep{ip: "198.18.0.3", ready: ptr(true), zone: "z2", hints: []string{"z2"}})},
			want: []string{"198.18.0.1:50051", "198.18.0.2:50051"}, counts: kuberesolver.Counts{Ready: 3}},
		{name: "zone with no endpoints falls back to all", target: byName, zone: "z9",
			slices: []*discoveryv1.EndpointSlice{slice("a", grpcPort,
				ep{ip: "198.18.0.1", ready: ptr(true), zone: "z1"}, ep{ip: "198.18.0.2", ready: ptr(true), zone: "z2"})},
			want: []string{"198.18.0.1:50051", "198.18.0.2:50051"}, counts: kuberesolver.Counts{Ready: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, counts := kuberesolver.Merge(tc.slices, tc.target, tc.zone)
			if !slices.Equal(addrs(got), tc.want) {
				t.Errorf("Merge = %v, want %v", addrs(got), tc.want)
			}
			if counts != tc.counts {
				t.Errorf("counts = %+v, want %+v", counts, tc.counts)
			}
		})
	}
}

// TestMergeManySlices merges 3 slices of 100 endpoints, as the
// EndpointSlice controller writes a 300-pod Service.
func TestMergeManySlices(t *testing.T) {
	t.Parallel()
	var ss []*discoveryv1.EndpointSlice
	for s := range 3 {
		var eps []ep
		for i := range 100 {
			e := ready(fmt.Sprintf("198.18.%d.%d", s, i))
			if i%10 == 0 {
				e = notReady(e.ip)
			}
			eps = append(eps, e)
		}
		ss = append(ss, slice(fmt.Sprint("s", s), grpcPort, eps...))
	}
	got, counts := kuberesolver.Merge(ss, kuberesolver.Target{Service: "x", PortName: "grpc"}, "")
	if len(got) != 270 || counts.Ready != 270 || counts.NotReady != 30 {
		t.Errorf("got %d endpoints, counts %+v; want 270 ready of 300", len(got), counts)
	}
	info, ok := kuberesolver.InfoFromEndpoint(got[0])
	if !ok || info.Pod == "" || !info.Ready {
		t.Errorf("endpoint attributes = %+v, %v", info, ok)
	}
}

func TestParseTarget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    kuberesolver.Target
		wantErr string
	}{
		{in: "example.default:grpc", want: kuberesolver.Target{Service: "example", Namespace: "default", PortName: "grpc"}},
		{in: "example:50051", want: kuberesolver.Target{Service: "example", Port: 50051}},
		{in: "example.prod.svc.cluster.local:grpc", want: kuberesolver.Target{Service: "example", Namespace: "prod", PortName: "grpc"}},
		{in: "example.default", wantErr: "no port"},
		{in: "Example.default:grpc", wantErr: "service name"},
		{in: "example.Default:grpc", wantErr: "namespace"},
		{in: "example:70000", wantErr: "out of range"},
		{in: "example:0", wantErr: "out of range"},
		{in: "example:not_a_port!", wantErr: "port name"},
	} {
		got, err := kuberesolver.ParseTarget(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseTarget(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func hints(zones []string) *discoveryv1.EndpointHints {
	if len(zones) == 0 {
		return nil
	}
	h := &discoveryv1.EndpointHints{}
	for _, z := range zones {
		h.ForZones = append(h.ForZones, discoveryv1.ForZone{Name: z})
	}
	return h
}
