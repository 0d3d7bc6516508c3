package kubernetes

import (
	"cmp"
	"hash/maphash"
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

// cand is one address of a slice, parsed once.
type cand struct {
	ip   string // as the slice lists it
	port int32
	addr string // ip:port
	info EndpointInfo
	ep   resolver.Endpoint
	ref  *addrRef // shared by every slice listing the address
	// score ranks the address for subsetting (see Merger.SetSubset):
	// the client's seeded hash of it.
	score uint64
}

// addrRef counts the slices that list an address, so that merging only
// deduplicates addresses that are actually listed twice.
type addrRef struct{ n int }

// sliceCache is what a slice contributed when last seen.
type sliceCache struct {
	obj     *discoveryv1.EndpointSlice
	rv      string
	gen     uint64
	cands   []cand
	skipped int
}

// Merger merges the EndpointSlices of one Service into endpoints,
// incrementally: a slice that has not changed since the last Update (same
// object, or same resourceVersion) is not parsed again, and in a changed
// slice every endpoint whose fields did not change keeps its parsed form,
// so an event that changes one endpoint costs a pass over cached entries
// rather than a rebuild. It is not safe for concurrent use.
type Merger struct {
	target Target
	zone   string
	gen    uint64
	cache  map[string]*sliceCache
	refs   map[string]*addrRef // address -> slices listing it
	best   map[string]int      // scratch: duplicated address -> index in all
	all    []*cand             // scratch
	subset int                 // 0: every endpoint
	seed   maphash.Seed
	heap   []*cand // scratch: the subset being chosen
}

// SetSubset makes Update return at most size endpoints, chosen by
// rendezvous hashing: each address is scored by a hash seeded per Merger
// (per client), and the size lowest scores are kept. A client's subset
// thus changes only when one of its own endpoints goes or an endpoint
// scoring lower arrives, and clients' subsets spread over all endpoints
// alike. Call it before the first Update; 0 turns subsetting off.
func (m *Merger) SetSubset(size int) {
	m.subset = size
	m.seed = maphash.MakeSeed()
}

// NewMerger returns a Merger for target, preferring zone when set.
func NewMerger(t Target, zone string) *Merger {
	return &Merger{target: t, zone: zone, cache: map[string]*sliceCache{}, refs: map[string]*addrRef{}, best: map[string]int{}}
}

// Merge computes the endpoints of a Service from all its EndpointSlices in
// one go; see Merger.Update.
func Merge(slices_ []*discoveryv1.EndpointSlice, t Target, zone string) ([]resolver.Endpoint, Counts) {
	return NewMerger(t, zone).Update(slices_)
}

// Update computes the addresses to balance over from all the
// EndpointSlices of a Service: the ready endpoints, or, when none is
// ready, those serving while terminating. An address listed in several
// slices (slices being rewritten) counts once, with its best conditions.
// Slices without the wanted port are skipped, as are endpoints without
// valid addresses. With a zone, same-zone endpoints are preferred when
// they are enough for the load (see preferZone).
func (m *Merger) Update(slices_ []*discoveryv1.EndpointSlice) ([]resolver.Endpoint, Counts) {
	var counts Counts
	m.gen++
	for _, s := range slices_ {
		if s == nil {
			continue
		}
		key := s.Namespace + "/" + s.Name
		c := m.cache[key]
		if c == nil || (c.obj != s && (s.ResourceVersion == "" || c.rv != s.ResourceVersion)) {
			c = m.parse(s, c)
			m.cache[key] = c
		}
		c.gen = m.gen
		counts.Skipped += c.skipped
	}
	for key, c := range m.cache {
		if c.gen != m.gen {
			m.release(c.cands)
			delete(m.cache, key)
		}
	}
	// Deduplicate addresses listed by several slices, keeping the best
	// conditions, in slice order.
	all := m.all[:0]
	dups := false
	for _, s := range slices_ {
		if s == nil {
			continue
		}
		c := m.cache[s.Namespace+"/"+s.Name]
		for i := range c.cands {
			cd := &c.cands[i]
			if cd.ref.n > 1 {
				if !dups {
					clear(m.best)
					dups = true
				}
				if j, seen := m.best[cd.addr]; seen {
					if rank(cd.info) > rank(all[j].info) {
						all[j] = cd
					}
					continue
				}
				m.best[cd.addr] = len(all)
			}
			all = append(all, cd)
		}
	}
	m.all = all
	nReady, nST := 0, 0
	for _, c := range all {
		switch {
		case c.info.Ready:
			nReady++
		case c.info.Serving && c.info.Terminating:
			nST++
		}
	}
	counts.Ready, counts.ServingTerminating, counts.NotReady = nReady, nST, len(all)-nReady-nST
	useReady := nReady > 0
	keep := func(c *cand) bool {
		if useReady {
			return c.info.Ready
		}
		return !c.info.Ready && c.info.Serving && c.info.Terminating
	}
	inZone, local := m.preferZone(all, keep)
	n := nReady
	if !useReady {
		n = nST
	}
	if local > 0 {
		n = local
	}
	if m.subset > 0 && n > m.subset {
		return m.chooseSubset(all, func(c *cand) bool { return keep(c) && (local == 0 || inZone(c)) }), counts
	}
	out := make([]resolver.Endpoint, 0, n)
	for _, c := range all {
		if keep(c) && (local == 0 || inZone(c)) {
			out = append(out, c.ep)
		}
	}
	return out, counts
}

// chooseSubset returns the m.subset kept candidates with the lowest
// scores, lowest first: one pass over all with a bounded max-heap.
func (m *Merger) chooseSubset(all []*cand, keep func(*cand) bool) []resolver.Endpoint {
	h := m.heap[:0]
	down := func(i int) {
		for {
			l, big := 2*i+1, i
			if l < len(h) && h[l].score > h[big].score {
				big = l
			}
			if r := l + 1; r < len(h) && h[r].score > h[big].score {
				big = r
			}
			if big == i {
				return
			}
			h[i], h[big] = h[big], h[i]
			i = big
		}
	}
	for _, c := range all {
		if !keep(c) {
			continue
		}
		if c.score == 0 {
			c.score = maphash.String(m.seed, c.addr) | 1
		}
		switch {
		case len(h) < m.subset:
			h = append(h, c)
			for i := len(h) - 1; i > 0; {
				p := (i - 1) / 2
				if h[p].score >= h[i].score {
					break
				}
				h[p], h[i] = h[i], h[p]
				i = p
			}
		case c.score < h[0].score:
			h[0] = c
			down(0)
		}
	}
	m.heap = h
	out := make([]resolver.Endpoint, len(h))
	sorted := slices.Clone(h)
	slices.SortFunc(sorted, func(a, b *cand) int { return cmp.Compare(a.score, b.score) })
	for i, c := range sorted {
		out[i] = c.ep
	}
	return out
}

// MinZoneEndpoints is the fewest same-zone endpoints a client keeps its
// traffic to; with fewer it uses every zone.
const MinZoneEndpoints = 2

// ZoneOverloadThreshold bounds how much more load than average the
// same-zone endpoints may take for the preference to hold (Kubernetes'
// topology-aware routing uses the same 20%).
const ZoneOverloadThreshold = 1.2

// preferZone decides whether the client keeps to its zone, following
// Kubernetes' topology-aware routing:
//   - when the EndpointSlice controller set hints on every kept endpoint,
//     the endpoints hinted for the zone are used (the controller has
//     already allocated them in proportion to the zones' capacity), and
//     all endpoints when none is hinted for it;
//   - without hints, the same-zone endpoints are used when there are at
//     least MinZoneEndpoints of them and, with clients spread evenly over
//     the zones, each would carry at most ZoneOverloadThreshold times the
//     average load: local × zones × threshold ≥ total.
//
// Otherwise (or with no zone set) every endpoint is used. It returns the
// membership test and how many kept endpoints pass it (0: use all).
func (m *Merger) preferZone(all []*cand, keep func(*cand) bool) (func(*cand) bool, int) {
	if m.zone == "" {
		return nil, 0
	}
	total, hinted, local, localHinted := 0, 0, 0, 0
	zones := map[string]bool{}
	for _, c := range all {
		if !keep(c) {
			continue
		}
		total++
		if c.info.Zone != "" {
			zones[c.info.Zone] = true
		}
		if len(c.info.ForZones) > 0 {
			hinted++
			if slices.Contains(c.info.ForZones, m.zone) {
				localHinted++
			}
		}
		if c.info.Zone == m.zone {
			local++
		}
	}
	if hinted == total && total > 0 {
		return func(c *cand) bool { return slices.Contains(c.info.ForZones, m.zone) }, localHinted
	}
	if local < MinZoneEndpoints || float64(local*len(zones))*ZoneOverloadThreshold < float64(total) {
		return nil, 0
	}
	return func(c *cand) bool { return c.info.Zone == m.zone }, local
}

// release drops a slice's claim on its addresses.
func (m *Merger) release(cs []cand) {
	for i := range cs {
		if cs[i].ref.n--; cs[i].ref.n == 0 {
			delete(m.refs, cs[i].addr)
		}
	}
}

// parse turns one slice into candidates, reusing those of prev (the same
// slice's last version) for endpoints that did not change.
func (m *Merger) parse(s *discoveryv1.EndpointSlice, prev *sliceCache) *sliceCache {
	c := &sliceCache{obj: s, rv: s.ResourceVersion}
	// Endpoints usually keep their place in a slice: match the previous
	// version by position, and by address only when that fails.
	var old map[string]*cand
	pos := 0
	lookup := func(ip string) *cand {
		if prev == nil {
			return nil
		}
		if pos < len(prev.cands) && prev.cands[pos].ip == ip {
			pos++
			return &prev.cands[pos-1]
		}
		if old == nil {
			old = make(map[string]*cand, len(prev.cands))
			for i := range prev.cands {
				old[prev.cands[i].ip] = &prev.cands[i]
			}
		}
		return old[ip]
	}
	defer func() {
		// Claim the new addresses before releasing the old ones, so that
		// an address kept across versions keeps its reference.
		for i := range c.cands {
			if c.cands[i].ref == nil {
				ref := m.refs[c.cands[i].addr]
				if ref == nil {
					ref = &addrRef{}
					m.refs[c.cands[i].addr] = ref
				}
				c.cands[i].ref = ref
			}
			c.cands[i].ref.n++
		}
		if prev != nil {
			m.release(prev.cands)
		}
	}()
	if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
		return c
	}
	port, ok := slicePort(s, m.target)
	if !ok {
		c.skipped = len(s.Endpoints)
		return c
	}
	var ps string
	c.cands = make([]cand, 0, len(s.Endpoints))
	for _, e := range s.Endpoints {
		info := endpointInfo(&e)
		for _, a := range e.Addresses {
			if o := lookup(a); o != nil && o.info.Equal(info) && o.port == port {
				c.cands = append(c.cands, cand{ip: a, port: port, addr: o.addr, info: o.info, ep: o.ep, ref: o.ref, score: o.score})
				continue
			}
			if net.ParseIP(a) == nil {
				c.skipped++
				continue
			}
			if ps == "" {
				ps = strconv.Itoa(int(port))
			}
			addr := net.JoinHostPort(a, ps)
			c.cands = append(c.cands, cand{ip: a, port: port, addr: addr, info: info, ep: resolver.Endpoint{
				Addresses:  []resolver.Address{{Addr: addr}},
				Attributes: attributes.New(infoKey{}, info),
			}})
		}
	}
	return c
}

func endpointInfo(e *discoveryv1.Endpoint) EndpointInfo {
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
	if e.Hints != nil && len(e.Hints.ForZones) > 0 {
		info.ForZones = make([]string, len(e.Hints.ForZones))
		for i, z := range e.Hints.ForZones {
			info.ForZones[i] = z.Name
		}
	}
	return info
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
