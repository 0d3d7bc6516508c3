package nodeagent

import (
	"fmt"
	"net"
	"sync"

	"github.com/kuberpc/kuberpc/localcluster/nodeagent/podnet"
)

// ipam hands out pod addresses from the pod range, skipping the network
// address and the gateway, and reusing released ones last.
type ipam struct {
	mu   sync.Mutex
	cidr *net.IPNet
	size uint32
	next uint32
	used map[uint32]bool
}

func newIPAM(cidr *net.IPNet) *ipam {
	ones, bits := cidr.Mask.Size()
	return &ipam{cidr: cidr, size: 1 << (bits - ones), next: 2, used: map[uint32]bool{}}
}

func (a *ipam) allocate() (net.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range a.size {
		n := a.next
		a.next++
		if a.next >= a.size-1 {
			a.next = 2
		}
		if !a.used[n] {
			a.used[n] = true
			return podnet.Nth(a.cidr, n), nil
		}
	}
	return nil, fmt.Errorf("pod range %s exhausted", a.cidr)
}

func (a *ipam) release(ip net.IP) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n, ok := a.offset(ip); ok {
		delete(a.used, n)
	}
}

// reserve marks ip used (an adopted pod's); it reports false when ip is
// outside the range or taken.
func (a *ipam) reserve(ip net.IP) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, ok := a.offset(ip)
	if !ok || n < 2 || n >= a.size-1 || a.used[n] {
		return false
	}
	a.used[n] = true
	return true
}

// offset is ip's index in the range.
func (a *ipam) offset(ip net.IP) (uint32, bool) {
	b, c := ip.To4(), a.cidr.IP.To4()
	if b == nil || !a.cidr.Contains(b) {
		return 0, false
	}
	return (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) -
		(uint32(c[0])<<24 | uint32(c[1])<<16 | uint32(c[2])<<8 | uint32(c[3])), true
}
