// Package podnet gives each pod of the local cluster its own network
// namespace, joined by a veth pair to a bridge on the host, as a node's
// CNI plugin would. Pod addresses come from 198.18.0.0/16, half of 198.18.0.0/15, the range
// reserved for benchmarking (RFC 2544), because EndpointSlice validation
// rejects loopback addresses. Pods get no default route and the host does
// not forward: nothing a pod sends leaves the machine.
//
// It uses vishvananda/netlink and netns, not the ip command. Root (or
// CAP_NET_ADMIN and CAP_SYS_ADMIN) is required.
package podnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NamespacePrefix starts the name of every pod network namespace, under
// /var/run/netns.
const NamespacePrefix = "kuberpc-"

// Config is a pod network: a bridge and the address range behind it.
type Config struct {
	// Bridge is the host bridge's name.
	Bridge string
	// CIDR is the pod range; its first address is the bridge's (the
	// gateway), the others go to pods.
	CIDR *net.IPNet
}

// Default is the local cluster's pod network: bridge kuberpc0 on
// 198.18.0.0/16; the other half, 198.19.0.0/16, is the Service range.
var Default = Config{Bridge: "kuberpc0", CIDR: mustCIDR("198.18.0.0/16")}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// Gateway is the bridge's address: the first of the range.
func (c Config) Gateway() net.IP { return Nth(c.CIDR, 1) }

// Nth returns the n-th address of cidr (IPv4).
func Nth(cidr *net.IPNet, n uint32) net.IP {
	b := cidr.IP.To4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}

// EnsureBridge creates the bridge with the gateway address and brings it
// up; an existing one is kept.
func EnsureBridge(c Config) error {
	link, err := netlink.LinkByName(c.Bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("look up bridge %s: %w", c.Bridge, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.Bridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s (needs root): %w", c.Bridge, err)
		}
		if link, err = netlink.LinkByName(c.Bridge); err != nil {
			return err
		}
	}
	ones, _ := c.CIDR.Mask.Size()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Gateway(), Mask: net.CIDRMask(ones, 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, c.Bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", c.Bridge, err)
	}
	return nil
}

// hostVeth names the host end of a pod's veth pair (at most 15 bytes).
func hostVeth(pod string) string {
	h := sha256.Sum256([]byte(pod))
	return "kr" + hex.EncodeToString(h[:])[:11]
}

// NamespaceName is the network namespace of pod id.
func NamespaceName(id string) string { return NamespacePrefix + id }

// NamespacePath is where the namespace of pod id is mounted.
func NamespacePath(id string) string { return namespaceDir + "/" + NamespaceName(id) }

// Setup creates the network namespace of pod id with loopback up and eth0
// at ip on the bridge, and no default route. An existing namespace of the
// same id is replaced.
func Setup(c Config, id string, ip net.IP) error {
	_ = Remove(id)
	if err := shareNamespaceDir(); err != nil {
		return err
	}
	br, err := netlink.LinkByName(c.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", c.Bridge, err)
	}
	ns, err := newNamed(NamespaceName(id))
	if err != nil {
		return fmt.Errorf("create network namespace %s: %w", NamespaceName(id), err)
	}
	defer ns.Close()
	fail := func(err error) error {
		_ = Remove(id)
		return err
	}
	host := hostVeth(id)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fail(fmt.Errorf("create veth %s: %w", host, err))
	}
	hl, err := netlink.LinkByName(host)
	if err != nil {
		return fail(err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return fail(err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fail(err)
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fail(fmt.Errorf("%s in pod namespace: %w", name, err))
		}
		if name == "eth0" {
			ones, _ := c.CIDR.Mask.Size()
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(ones, 32)}}); err != nil {
				return fail(fmt.Errorf("address %s on eth0: %w", ip, err))
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fail(fmt.Errorf("bring up %s: %w", name, err))
		}
	}
	return nil
}

// namespaceDir holds the named network namespaces, as iproute2 keeps them.
const namespaceDir = "/var/run/netns"

// shareNamespaceDir makes namespaceDir a shared mount point, as ip netns
// add does on first use, while it holds no namespace. Left a plain
// directory, the first ip netns add on the host (a user's, a test's)
// bind-mounts it over itself, and the pods' namespace mounts stay on the
// directory beneath: deleting them through the new mount fails
// ("invalid argument"), and cluster down leaves them.
func shareNamespaceDir() error {
	if err := os.MkdirAll(namespaceDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", namespaceDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if !errors.Is(err, unix.EINVAL) {
		if err != nil {
			return fmt.Errorf("share %s: %w", namespaceDir, err)
		}
		return nil // a mount point already
	}
	if entries, err := os.ReadDir(namespaceDir); err != nil || len(entries) > 0 {
		return err // binding it now would hide these
	}
	if err := unix.Mount(namespaceDir, namespaceDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a mount point: %w", namespaceDir, err)
	}
	if err := unix.Mount("", namespaceDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("share %s: %w", namespaceDir, err)
	}
	return nil
}

// newNamed creates a named network namespace without leaving the calling
// goroutine's thread in it.
func newNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		return 0, err
	}
	if err := netns.Set(orig); err != nil {
		ns.Close()
		return 0, err
	}
	return ns, nil
}

// Dial connects to address (host:port, an IP) from inside the network
// namespace of pod id, as a process of the pod would: 127.0.0.1 is the
// pod's own loopback. This is how a kubelet's runtime serves
// port-forward.
func Dial(ctx context.Context, id, address string) (net.Conn, error) {
	var conn net.Conn
	err := InNamespace(NamespacePath(id), func() (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", address)
		return err
	})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, err
	}
	return conn, nil
}

// InNamespace runs fn with the calling goroutine's thread in the network
// namespace mounted at path, then returns the thread to its own: the
// sockets fn makes (it must make them on this goroutine) belong to that
// namespace. A connect or an accept may wait; the goroutine keeps its
// thread while it does.
func InNamespace(path string, fn func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer ns.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked, so that Go ends it with the goroutine
		// rather than run other goroutines in that namespace.
		return fmt.Errorf("leave network namespace %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Remove deletes the namespace of pod id; its veth pair goes with it.
func Remove(id string) error {
	err := netns.DeleteNamed(NamespaceName(id))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Teardown removes every pod namespace and the bridge.
func Teardown(c Config) error {
	var errs []error
	if err := RemoveNamespaces(nil); err != nil {
		errs = append(errs, err)
	}
	if l, err := netlink.LinkByName(c.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", c.Bridge, err))
		}
	}
	return errors.Join(errs...)
}

// CheckRouted returns an error unless traffic from the host to ip leaves
// through the bridge: tests call it before sending a pod traffic, so that
// nothing goes anywhere else.
func CheckRouted(c Config, ip net.IP) error {
	if !c.CIDR.Contains(ip) {
		return fmt.Errorf("%s is outside the pod range %s", ip, c.CIDR)
	}
	return CheckViaBridge(c, ip)
}

// RemoveNamespaces deletes every pod network namespace but those of the
// pod ids in keep, keeping the bridge: a restarted node agent keeps the
// pods it adopted and removes what else an earlier one left.
func RemoveNamespaces(keep map[string]bool) error {
	var errs []error
	entries, _ := os.ReadDir(namespaceDir)
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), NamespacePrefix); ok && !keep[id] {
			if err := netns.DeleteNamed(e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// RouteToBridge routes cidr (the Service range) onto the bridge.
func RouteToBridge(c Config, cidr string) error {
	_, dst, err := net.ParseCIDR(cidr)
	if err != nil {
		return err
	}
	br, err := netlink.LinkByName(c.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", c.Bridge, err)
	}
	return netlink.RouteReplace(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: dst, Src: c.Gateway(), Scope: netlink.SCOPE_LINK})
}

// CheckViaBridge returns an error unless traffic from the host to ip (a
// pod or a ClusterIP) leaves through the bridge.
func CheckViaBridge(c Config, ip net.IP) error {
	br, err := netlink.LinkByName(c.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", c.Bridge, err)
	}
	routes, err := netlink.RouteGet(ip)
	if err != nil {
		return fmt.Errorf("route to %s: %w", ip, err)
	}
	if len(routes) == 0 {
		return fmt.Errorf("no route to %s", ip)
	}
	for _, r := range routes {
		if r.LinkIndex != br.Attrs().Index {
			return fmt.Errorf("%s is routed via link %d, not bridge %s", ip, r.LinkIndex, c.Bridge)
		}
	}
	return nil
}
