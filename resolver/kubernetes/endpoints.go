package kubernetes

import (
	"net"
	"slices"
	"strconv"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// EndpointInfo is what the resolver knows of an endpoint, carried in
// resolver.Endpoint attributes; read it with InfoFromEndpoint.
type EndpointInfo struct {
	Zone, Node, Pod string
	// ForZones are the topology hints: zones this endpoint should serve.
	ForZones    []string
	Ready       bool
	Serving     bool
	Terminating bool
}

type infoKey struct{}

// InfoFromEndpoint returns the EndpointInfo the resolver attached to e.
func InfoFromEndpoint(e resolver.Endpoint) (EndpointInfo, bool) {
	v, ok := e.Attributes.Value(infoKey{}).(EndpointInfo)
	return v, ok
}

// Equal makes EndpointInfo comparable as an attribute value.
func (i EndpointInfo) Equal(o any) bool {
	oi, ok := o.(EndpointInfo)
	return ok && i.Zone == oi.Zone && i.Node == oi.Node && i.Pod == oi.Pod && slices.Equal(i.ForZones, oi.ForZones) &&
		i.Ready == oi.Ready && i.Serving == oi.Serving && i.Terminating == oi.Terminating
}

// Counts are the endpoints seen, by condition, for metrics.
type Counts struct {
	Ready, ServingTerminating, NotReady, Skipped int
}

// Merge computes the addresses to balance over from all the EndpointSlices
// of a Service: the ready endpoints, or, when none is ready, those serving
// while terminating. An address listed in several slices (slices being
// rewritten) counts once, with its best conditions. Slices without the
// wanted port are skipped, as are endpoints without addresses. With zone
// set, endpoints in that zone (or hinted for it) are preferred when there
// are any.
func Merge(slices_ []*discoveryv1.EndpointSlice, t Target, zone string) ([]resolver.Endpoint, Counts) {
	type cand struct {
		addr string
		info EndpointInfo
	}
	best := map[string]cand{}
	var order []string
	var counts Counts
	for _, s := range slices_ {
		if s == nil || (s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6) {
			continue
		}
		port, ok := slicePort(s, t)
		if !ok {
			counts.Skipped += len(s.Endpoints)
			continue
		}
		for _, e := range s.Endpoints {
			info := EndpointInfo{
				Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready, // nil means unknown: treat as ready
				Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
			}
			info.Serving = info.Ready
			if e.Conditions.Serving != nil {
				info.Serving = *e.Conditions.Serving
			}
			if e.Zone != nil {
				info.Zone = *e.Zone
			}
			if e.NodeName != nil {
				info.Node = *e.NodeName
			}
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				info.Pod = e.TargetRef.Name
			}
			if e.Hints != nil {
				for _, z := range e.Hints.ForZones {
					info.ForZones = append(info.ForZones, z.Name)
				}
			}
			for _, a := range e.Addresses {
				if net.ParseIP(a) == nil {
					counts.Skipped++
					continue
				}
				addr := net.JoinHostPort(a, strconv.Itoa(int(port)))
				prev, seen := best[addr]
				if !seen {
					order = append(order, addr)
				}
				if !seen || rank(info) > rank(prev.info) {
					best[addr] = cand{addr, info}
				}
			}
		}
	}
	var ready, servingTerminating []cand
	for _, addr := range order {
		c := best[addr]
		switch {
		case c.info.Ready:
			ready = append(ready, c)
			counts.Ready++
		case c.info.Serving && c.info.Terminating:
			servingTerminating = append(servingTerminating, c)
			counts.ServingTerminating++
		default:
			counts.NotReady++
		}
	}
	use := ready
	if len(use) == 0 {
		use = servingTerminating
	}
	if zone != "" {
		var local []cand
		for _, c := range use {
			if c.info.Zone == zone || slices.Contains(c.info.ForZones, zone) {
				local = append(local, c)
			}
		}
		if len(local) > 0 {
			use = local
		}
	}
	out := make([]resolver.Endpoint, 0, len(use))
	for _, c := range use {
		out = append(out, resolver.Endpoint{
			Addresses:  []resolver.Address{{Addr: c.addr}},
			Attributes: attributes.New(infoKey{}, c.info),
		})
	}
	return out, counts
}

func rank(i EndpointInfo) int {
	switch {
	case i.Ready:
		return 2
	case i.Serving:
		return 1
	}
	return 0
}

// slicePort finds the target's port in s.
func slicePort(s *discoveryv1.EndpointSlice, t Target) (int32, bool) {
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		if t.PortName != "" {
			if p.Name != nil && *p.Name == t.PortName {
				return *p.Port, true
			}
			continue
		}
		if *p.Port == t.Port {
			return t.Port, true
		}
	}
	return 0, false
}
