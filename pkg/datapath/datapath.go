// Package datapath loads Outcall's TCX program, attaches it to container-facing
// bridge ports and manages the maps it decides from: endpoints (port →
// identity), the ports' networks and the addresses endpoints hold (for ports
// without identity, which reach only the gateway's services), grants (identity, destination → allow with optional expiry),
// gateway services and the packet-layer rule tables the rule engine lowers
// its network rules into. Maps and links are pinned in bpffs so that
// enforcement survives the daemon, and a restarted daemon swaps its program
// into the pinned links without a moment in which a port is open.
package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/api"
)

// Options configure Open.
type Options struct {
	// PinDir is the bpffs directory for maps and links. Empty means nothing is
	// pinned (tests and benchmarks).
	PinDir string
	// AllowPrivatePins lets Open pin on a bpffs that would not outlive the
	// process (see PrivatePinsError), with a loud warning. For experiments
	// only: at exit every port loses its program.
	AllowPrivatePins bool
	// EventsPerSecond bounds sampled drop events per CPU.
	EventsPerSecond uint32
	Logger          *slog.Logger
}

// Datapath is the loaded program and its maps.
type Datapath struct {
	objs   portIngressObjects
	pinDir string
	log    *slog.Logger

	mu    sync.Mutex
	links map[int]link.Link // by port ifindex

	rules ruleState

	barrierMu    sync.Mutex
	barrierInner *ebpf.Map // the one entry of the barrier map
}

// Endpoint is what the program knows about a port: who sends on it, and
// where every frame it sends must go.
type Endpoint struct {
	Identity uint32
	IP       netip.Addr
	Gateway  netip.Addr
	MAC      net.HardwareAddr
	// GatewayMAC is the bridge's own address: an IPv4 frame or ARP reply
	// the port sends to any other MAC is dropped (east_west).
	GatewayMAC net.HardwareAddr
}

// PortNetwork is the network of a port of an Outcall bridge, for a port
// without identity (no Endpoint): it reaches the services open on Gateway's
// address, and sends ARP for it, from an address of Gateway's subnet that no
// endpoint holds (SetEndpointAddrs), and nothing else.
type PortNetwork struct {
	// Gateway is the gateway address with the subnet's prefix length
	// (at most /30).
	Gateway    netip.Prefix
	GatewayMAC net.HardwareAddr
}

// EndpointAddrs are the addresses a registered endpoint holds: no port
// without identity may send from either, whether the endpoint's port is
// there or not.
type EndpointAddrs struct {
	Identity uint32
	IP       netip.Addr
	MAC      net.HardwareAddr
}

// Service is a gateway port (DNS, proxy) that endpoints may reach. A service
// is open on one gateway address only: the endpoints whose Endpoint.Gateway
// it is reach it, the endpoints of every other gateway (another Outcall
// network's) do not, even on the same port. Gateway must be IPv4.
type Service struct {
	Gateway netip.Addr
	Proto   uint8
	Port    uint16
}

func (s Service) String() string {
	return fmt.Sprintf("%s/%d on gateway %s", ProtoName(s.Proto), s.Port, s.Gateway)
}

func serviceOf(k portIngressServiceKey) Service {
	return Service{Gateway: netip.AddrFrom4(k.Gateway), Proto: k.Proto, Port: k.Port}
}

// Open loads the program and its maps, reusing pinned maps when PinDir holds
// them, and re-attaches the new program to every pinned link.
func Open(opts Options) (*Datapath, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.EventsPerSecond == 0 {
		opts.EventsPerSecond = 100
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	spec, err := loadPortIngress()
	if err != nil {
		return nil, fmt.Errorf("load datapath spec: %w", err)
	}
	for name, v := range map[string]uint32{
		"allow_mark":        api.AllowMark,
		"allow_mark_mask":   api.AllowMarkMask,
		"events_per_second": opts.EventsPerSecond,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	var collOpts ebpf.CollectionOptions
	if opts.PinDir == "" {
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
	} else {
		if err := ensureBPFFS(opts.PinDir, opts.AllowPrivatePins, opts.Logger); err != nil {
			return nil, err
		}
		if err := replaceStaleMaps(spec, opts.PinDir, opts.Logger); err != nil {
			return nil, err
		}
		collOpts.Maps.PinPath = opts.PinDir
	}
	d := &Datapath{pinDir: opts.PinDir, log: opts.Logger, links: map[int]link.Link{}}
	if err := d.rules.setTemplates(spec); err != nil {
		return nil, err
	}
	if err := spec.LoadAndAssign(&d.objs, &collOpts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load datapath: pinned maps in %s were made by an incompatible version; the pinned program keeps enforcing, remove %s to start fresh: %w", opts.PinDir, opts.PinDir, err)
		}
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	if err := d.SetFences(nil); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.adoptPinnedLinks(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// replaceStaleMaps unpins every pinned map this program cannot use, so that
// the load creates a new one: an older version made it with another size or
// layout. Each is state the daemon writes afresh at startup (endpoints,
// services, rule tables, fences) or may lose (counters restart at zero,
// grants do not survive a restart, flows are decided again), and the old
// program keeps its own reference until its links are updated, so nothing is
// open in between.
func replaceStaleMaps(spec *ebpf.CollectionSpec, dir string, log *slog.Logger) error {
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("load pinned map %s: %w", path, err)
		}
		incompatible := ms.Compatible(m)
		m.Close()
		if incompatible == nil {
			continue
		}
		log.Warn("replacing a pinned map of an older version", "map", path, "change", incompatible)
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale pinned map %s: %w", path, err)
		}
	}
	return nil
}

// ensureBPFFS makes sure dir lives on a bpffs that outlives the process,
// mounting one at /sys/fs/bpf if nothing is mounted there yet and this is the
// init mount namespace. A bpffs private to this mount namespace (see
// PrivatePinsError) is refused unless allowPrivate, which only warns.
func ensureBPFFS(dir string, allowPrivate bool, log *slog.Logger) error {
	const root = "/sys/fs/bpf"
	private := func(err error) error {
		if !allowPrivate {
			return err
		}
		log.Warn("--allow-private-pins: PINNED STATE WILL NOT OUTLIVE THIS PROCESS; at exit every port loses its program and is left to the nftables floor alone", "pin_dir", dir, "problem", err.Error())
		return nil
	}
	if !isBPFFS(root) {
		if err := mountWouldBePrivate(dir, root); err != nil {
			if err := private(err); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(root, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", root, err)
		}
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", root, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "links"), 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	if !isBPFFS(dir) {
		return fmt.Errorf("pin directory %s is not on a bpf filesystem", dir)
	}
	if err := checkPinsOutlive(dir); err != nil {
		var pe *PrivatePinsError
		if !errors.As(err, &pe) {
			return err
		}
		return private(err)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

func (d *Datapath) linkPath(ifindex int) string {
	return filepath.Join(d.pinDir, "links", "port-"+strconv.Itoa(ifindex))
}

// adoptPinnedLinks swaps the freshly loaded program into every link a previous
// daemon pinned. The update is atomic in the kernel: the port runs the old
// program until the instant it runs the new one.
func (d *Datapath) adoptPinnedLinks() error {
	if d.pinDir == "" {
		return nil
	}
	entries, err := os.ReadDir(filepath.Join(d.pinDir, "links"))
	if err != nil {
		return fmt.Errorf("read pinned links: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(d.pinDir, "links", e.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			return fmt.Errorf("load pinned link %s: %w", path, err)
		}
		info, err := l.Info()
		if err != nil || info.TCX() == nil || info.TCX().Ifindex == 0 {
			// The port is gone; the kernel already detached the link.
			d.log.Info("removing pinned link of a vanished port", "path", path)
			_ = l.Unpin()
			l.Close()
			continue
		}
		if err := l.Update(d.objs.OutcallPortIngress); err != nil {
			l.Close()
			return fmt.Errorf("update pinned link %s: %w", path, err)
		}
		ifindex := int(info.TCX().Ifindex)
		d.links[ifindex] = l
		d.log.Info("re-attached datapath to port", "ifindex", ifindex)
	}
	return nil
}

// Attach puts the program on the port's ingress, first in the TCX chain so
// no other program can pass a packet before Outcall decides. Idempotent.
func (d *Datapath) Attach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.links[ifindex]; ok {
		return nil
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   d.objs.OutcallPortIngress,
		Attach:    ebpf.AttachTCXIngress,
		Anchor:    link.Head(),
	})
	if err != nil {
		return fmt.Errorf("attach tcx to ifindex %d: %w", ifindex, err)
	}
	if d.pinDir != "" {
		path := d.linkPath(ifindex)
		_ = os.Remove(path) // a stale pin of an earlier port with this ifindex
		if err := l.Pin(path); err != nil {
			l.Close()
			return fmt.Errorf("pin link of ifindex %d: %w", ifindex, err)
		}
	}
	d.links[ifindex] = l
	return nil
}

// Detach removes the program from the port, and the port's network
// (SetPortNetwork). The port is then dead: the nftables floor drops
// everything it sends.
func (d *Datapath) Detach(ifindex int) error {
	if err := d.detach(ifindex); err != nil {
		return err
	}
	if err := d.objs.PortNetworks.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete network of ifindex %d: %w", ifindex, err)
	}
	return nil
}

// detach removes the program from the port.
func (d *Datapath) detach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.links[ifindex]
	if !ok {
		return nil
	}
	delete(d.links, ifindex)
	if d.pinDir != "" {
		_ = l.Unpin()
	}
	if err := l.Close(); err != nil {
		return fmt.Errorf("detach tcx from ifindex %d: %w", ifindex, err)
	}
	return nil
}

// Attached reports whether the program is attached to the port.
func (d *Datapath) Attached(ifindex int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.links[ifindex]
	return ok
}

// AttachedPorts lists the ifindexes the program is attached to.
func (d *Datapath) AttachedPorts() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]int, 0, len(d.links))
	for i := range d.links {
		out = append(out, i)
	}
	return out
}

// SetEndpoint gives the port an identity and the addresses it may send from.
// The addresses are held for the endpoint (as by SetEndpointAddrs) before
// the port gets its identity, so no port without identity sends from them
// once a gateway service could take a sender from them for this endpoint.
func (d *Datapath) SetEndpoint(ifindex int, ep Endpoint) error {
	if !ep.IP.Is4() || !ep.Gateway.Is4() || len(ep.MAC) != 6 || len(ep.GatewayMAC) != 6 {
		return fmt.Errorf("set endpoint of ifindex %d: need IPv4 address, IPv4 gateway, 6-byte MAC and 6-byte gateway MAC", ifindex)
	}
	if err := d.holdAddrs(EndpointAddrs{Identity: ep.Identity, IP: ep.IP, MAC: ep.MAC}); err != nil {
		return fmt.Errorf("set endpoint of ifindex %d: %w", ifindex, err)
	}
	v := portIngressEndpoint{Identity: ep.Identity, Ip: ep.IP.As4(), Gateway: ep.Gateway.As4()}
	copy(v.Mac[:], ep.MAC)
	copy(v.GatewayMac[:], ep.GatewayMAC)
	if err := d.objs.Endpoints.Put(uint32(ifindex), &v); err != nil {
		return fmt.Errorf("set endpoint of ifindex %d: %w", ifindex, err)
	}
	return nil
}

func ipKey(ip netip.Addr) portIngressEndpointIp { return portIngressEndpointIp{Addr: ip.As4()} }

func macKey(mac net.HardwareAddr) portIngressEndpointMac {
	var k portIngressEndpointMac
	copy(k.Mac[:], mac)
	return k
}

// holdAddrs writes a's addresses into endpoint_ips and endpoint_macs.
func (d *Datapath) holdAddrs(a EndpointAddrs) error {
	if err := d.objs.EndpointIps.Put(ipKey(a.IP), a.Identity); err != nil {
		return fmt.Errorf("hold address %s for identity %d: %w", a.IP, a.Identity, err)
	}
	if err := d.objs.EndpointMacs.Put(macKey(a.MAC), a.Identity); err != nil {
		return fmt.Errorf("hold mac %s for identity %d: %w", a.MAC, a.Identity, err)
	}
	return nil
}

// SetEndpointAddrs replaces the set of addresses endpoints hold with addrs
// (every registered endpoint, its port there or not) and the addresses of
// every port that has an identity now: SetEndpoint's are never released
// here, so a caller that lists too few cannot open an active endpoint's
// address to a port without identity. An entry that is not an IPv4 address
// and a 6-byte MAC is an error naming it, and then nothing is changed.
func (d *Datapath) SetEndpointAddrs(addrs []EndpointAddrs) error {
	ips := map[portIngressEndpointIp]uint32{}
	macs := map[portIngressEndpointMac]uint32{}
	for _, a := range addrs {
		if !a.IP.Is4() || len(a.MAC) != 6 {
			return fmt.Errorf("set endpoint addresses: identity %d: need an IPv4 address and a 6-byte MAC, have %s and %s", a.Identity, a.IP, a.MAC)
		}
		ips[ipKey(a.IP)] = a.Identity
		macs[macKey(a.MAC)] = a.Identity
	}
	var ifindex uint32
	var ep portIngressEndpoint
	it := d.objs.Endpoints.Iterate()
	for it.Next(&ifindex, &ep) {
		ips[portIngressEndpointIp{Addr: ep.Ip}] = ep.Identity
		macs[portIngressEndpointMac{Mac: ep.Mac}] = ep.Identity
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("set endpoint addresses: list endpoints: %w", err)
	}
	// Additions first: an address changing hands is never free between.
	for k, id := range ips {
		if err := d.objs.EndpointIps.Put(k, id); err != nil {
			return fmt.Errorf("hold address %s for identity %d: %w", netip.AddrFrom4(k.Addr), id, err)
		}
	}
	for k, id := range macs {
		if err := d.objs.EndpointMacs.Put(k, id); err != nil {
			return fmt.Errorf("hold mac %s for identity %d: %w", net.HardwareAddr(k.Mac[:]), id, err)
		}
	}
	if err := releaseExcept(d.objs.EndpointIps, ips); err != nil {
		return fmt.Errorf("release endpoint addresses: %w", err)
	}
	if err := releaseExcept(d.objs.EndpointMacs, macs); err != nil {
		return fmt.Errorf("release endpoint macs: %w", err)
	}
	return nil
}

// releaseExcept deletes every key of m that keep does not hold.
func releaseExcept[K comparable](m *ebpf.Map, keep map[K]uint32) error {
	var k K
	var v uint32
	var stale []K
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := keep[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// SetPortNetwork tells the program which network the port is on, for the
// time it has no identity: it then reaches the services open on the
// network's gateway and nothing else (PortNetwork). A port the program runs
// on without it, and without an identity, reaches nothing. Detach removes
// it.
func (d *Datapath) SetPortNetwork(ifindex int, pn PortNetwork) error {
	gw := pn.Gateway
	if !gw.IsValid() || !gw.Addr().Is4() || gw.Bits() < 1 || gw.Bits() > 30 || len(pn.GatewayMAC) != 6 {
		return fmt.Errorf("set network of ifindex %d: need an IPv4 gateway with a prefix of /1 to /30 and a 6-byte gateway MAC, have %s and %s", ifindex, gw, pn.GatewayMAC)
	}
	v := portIngressPortNetwork{Gateway: gw.Addr().As4(), Subnet: gw.Masked().Addr().As4(), Prefixlen: uint8(gw.Bits())}
	copy(v.GatewayMac[:], pn.GatewayMAC)
	if err := d.objs.PortNetworks.Put(uint32(ifindex), &v); err != nil {
		return fmt.Errorf("set network of ifindex %d: %w", ifindex, err)
	}
	return nil
}

// DeleteEndpoint removes the port's identity and ends the flows it opened;
// the port then reaches nothing.
func (d *Datapath) DeleteEndpoint(ifindex int) error {
	err := d.objs.Endpoints.Delete(uint32(ifindex))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint of ifindex %d: %w", ifindex, err)
	}
	if _, err := d.EndFlows(FlowMatch{Ifindex: ifindex}); err != nil {
		return fmt.Errorf("delete endpoint of ifindex %d: %w", ifindex, err)
	}
	return nil
}

// SetServices replaces the set of gateway services: each opens its port on
// its own gateway address only. A service whose Gateway is not a valid IPv4
// address is an error naming it, and then nothing is changed.
func (d *Datapath) SetServices(services []Service) error {
	want := map[portIngressServiceKey]bool{}
	for _, s := range services {
		switch {
		case !s.Gateway.IsValid():
			return fmt.Errorf("set services: service %s/%d: gateway address is invalid (unset)", ProtoName(s.Proto), s.Port)
		case !s.Gateway.Is4():
			return fmt.Errorf("set services: service %s/%d: gateway %s is not an IPv4 address", ProtoName(s.Proto), s.Port, s.Gateway)
		}
		want[portIngressServiceKey{Gateway: s.Gateway.As4(), Port: s.Port, Proto: s.Proto}] = true
	}
	var k portIngressServiceKey
	var v uint8
	var stale []portIngressServiceKey
	it := d.objs.Services.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	for k := range want {
		if err := d.objs.Services.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("add service %s: %w", serviceOf(k), err)
		}
	}
	for _, k := range stale {
		if err := d.objs.Services.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove service %s: %w", serviceOf(k), err)
		}
	}
	return nil
}

// Close releases the program and map handles, rule table generations
// included. Pinned links and maps stay, and the pinned outer rule maps keep
// the active generation, so enforcement continues without the daemon.
func (d *Datapath) Close() error {
	d.rules.close()
	if d.barrierInner != nil {
		d.barrierInner.Close()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, l := range d.links {
		l.Close()
		delete(d.links, i)
	}
	return d.objs.Close()
}

// Unpin removes every pinned link and map (bridge teardown). Links are
// detached as their last reference goes.
func (d *Datapath) Unpin() error {
	if d.pinDir == "" {
		return nil
	}
	d.mu.Lock()
	for i, l := range d.links {
		_ = l.Unpin()
		l.Close()
		delete(d.links, i)
	}
	d.mu.Unlock()
	var errs []error
	for _, m := range []*ebpf.Map{
		d.objs.Endpoints, d.objs.Grants, d.objs.GrantPrefixes, d.objs.Services, d.objs.Counters, d.objs.DropEvents,
		d.objs.RuleActive, d.objs.RuleDsts, d.objs.RuleTable, d.objs.RuleAgents, d.objs.RuleHits,
		d.objs.Fences, d.objs.Flows, d.objs.PortNetworks, d.objs.EndpointIps, d.objs.EndpointMacs,
	} {
		if err := m.Unpin(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// bootNow is the clock the program compares expiries with.
func bootNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return time.Duration(ts.Nano())
}

// ProtoNumber maps "tcp", "udp", "icmp" and "" (any) to IP protocol numbers.
func ProtoNumber(name string) (uint8, error) {
	switch strings.ToLower(name) {
	case "":
		return 0, nil
	case "tcp":
		return unix.IPPROTO_TCP, nil
	case "udp":
		return unix.IPPROTO_UDP, nil
	case "icmp":
		return unix.IPPROTO_ICMP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q", name)
}

// ProtoName is the inverse of ProtoNumber.
func ProtoName(p uint8) string {
	switch p {
	case 0:
		return ""
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	}
	return strconv.Itoa(int(p))
}

// LinkAlive asks the kernel whether the program is still attached to the
// port: `bpftool link detach` or a foreign tool can detach a TCX link behind
// the daemon's back, which leaves the port dead (the floor drops what it
// sends) but no longer enforced as configured.
func (d *Datapath) LinkAlive(ifindex int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.links[ifindex]
	if !ok {
		return false
	}
	info, err := l.Info()
	return err == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex
}

// Reattach replaces the port's link with a fresh one at the head of the
// chain. The old link, detached or not, is closed and unpinned first.
func (d *Datapath) Reattach(ifindex int) error {
	if err := d.detach(ifindex); err != nil {
		return err
	}
	return d.Attach(ifindex)
}
