package datapath

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"outcall.dev/outcall/internal/packet"
	"outcall.dev/outcall/internal/privtest"
	"outcall.dev/outcall/pkg/api"
)

const (
	tcActOK   = 0
	tcActShot = 2
)

var (
	agentMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	otherMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	gwMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	agentIP   = netip.MustParseAddr("10.200.0.10")
	otherIP   = netip.MustParseAddr("10.200.0.11")
	gatewayIP = netip.MustParseAddr("10.200.0.1")
	upstream  = netip.MustParseAddr("198.51.100.10")
	upstream2 = netip.MustParseAddr("198.51.100.20")
	metadata  = netip.MustParseAddr("169.254.169.254")
	broadcast = netip.MustParseAddr("255.255.255.255")
	privateDB = netip.MustParseAddr("10.20.0.5")
	hostAddr  = netip.MustParseAddr("192.0.2.1") // one of the host's own addresses
)

const (
	agentPort   = 4242 // ifindex of the agent's port, as the program sees it
	otherPort   = 4343
	unknownPort = 4444
	agentID     = 7
	otherID     = 8
)

// openTest loads the datapath unpinned, or skips when BPF is unavailable.
func openTest(t testing.TB) *Datapath {
	t.Helper()
	privtest.Root(t)
	d, err := Open(Options{})
	if err != nil {
		privtest.Skip(t, "cannot load BPF: "+err.Error())
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// testPinDir is a fresh pin directory on bpffs, removed after the test.
func testPinDir(t *testing.T) string {
	t.Helper()
	privtest.Root(t)
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("outcall-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-")))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func seed(t testing.TB, d *Datapath) {
	t.Helper()
	must(t, d.SetEndpoint(agentPort, Endpoint{Identity: agentID, IP: agentIP, Gateway: gatewayIP, MAC: agentMAC, GatewayMAC: gwMAC}))
	must(t, d.SetEndpoint(otherPort, Endpoint{Identity: otherID, IP: otherIP, Gateway: gatewayIP, MAC: otherMAC, GatewayMAC: gwMAC}))
	must(t, d.SetServices([]Service{{gatewayIP, 17, api.DefaultDNSPort}, {gatewayIP, 6, api.DefaultDNSPort}, {gatewayIP, 6, api.DefaultProxyPort}}))
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: upstream, Proto: 6, Port: 443}}))
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: upstream, Proto: 17}}))
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: upstream2}}))
	// Restricted destinations: an Outcall subnet no grant opens, a host
	// address, and grants to restricted addresses with and without the
	// operator's license.
	must(t, d.SetFences([]Fence{{Prefix: netip.MustParsePrefix("10.200.0.0/16"), Never: true}, {Prefix: netip.PrefixFrom(hostAddr, 32)}}))
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: metadata}}))
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: broadcast}}))
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: hostAddr}}))
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: privateDB, Proto: 6, Port: 5432}, AllowPrivate: true}))
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: otherIP}, AllowPrivate: true}))
	// An entry that expired long ago, written raw: PutGrant refuses it.
	key := portIngressGrantKey{Identity: agentID, Daddr: upstream.As4(), Dport: 8443, Proto: 6}
	must(t, d.objs.Grants.Put(&key, &portIngressGrantValue{ExpiresNs: 1}))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// run feeds one frame to the program as if it arrived on port and returns
// the verdict and the mark it left.
func run(t testing.TB, d *Datapath, port uint32, data []byte) (uint32, uint32) {
	t.Helper()
	in := skbContext{IngressIfindex: port, Mark: 0x1234}
	var out skbContext
	ret, err := d.objs.OutcallPortIngress.Run(&ebpf.RunOptions{Data: data, Context: in, ContextOut: &out})
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret, out.Mark
}

func tcp(src netip.Addr, dst netip.Addr, dport uint16) packet.Frame {
	return packet.TCP(agentMAC, gwMAC, src, dst, 40000, dport)
}

func udp(dst netip.Addr, dport uint16) packet.Frame {
	return packet.UDP(agentMAC, gwMAC, agentIP, dst, 40000, dport)
}

func TestVerdicts(t *testing.T) {
	d := openTest(t)
	seed(t, d)

	withOptions := tcp(agentIP, upstream, 443)
	withOptions.IPOptions = []byte{1, 1, 1, 0} // NOP NOP NOP EOL
	spoofMAC := tcp(agentIP, upstream, 443)
	spoofMAC.SrcMAC = otherMAC
	icmp := packet.ICMP(agentMAC, gwMAC, agentIP, upstream2)
	icmpDenied := packet.ICMP(agentMAC, gwMAC, agentIP, upstream)
	moreFrags := tcp(agentIP, upstream, 443)
	moreFrags.FragOff = 0x2000
	laterFrag := udp(upstream, 5000)
	laterFrag.FragOff = 0x0010
	dontFrag := tcp(agentIP, upstream, 443)
	dontFrag.FragOff = 0x4000
	// An IPv4 frame shorter than an IP header cannot be injected:
	// BPF_PROG_TEST_RUN refuses it with EINVAL before the program runs.
	shortPorts := tcp(agentIP, upstream, 443)
	shortPorts.TruncateTo = 14 + 20 + 2
	badIHL := tcp(agentIP, upstream, 443)
	badIHL.IHL = 4
	hugeIHL := tcp(agentIP, upstream, 443) // header claims 60 bytes, frame has 40
	hugeIHL.IHL = 15
	// Loose and strict source route options, padded to 8 bytes: the
	// packets the gateway would forward with the mark.
	lsrr := udp(gatewayIP, 53)
	lsrr.IPOptions = []byte{0x83, 7, 4, 198, 51, 100, 10, 0}
	ssrr := udp(gatewayIP, 53)
	ssrr.IPOptions = []byte{0x89, 7, 4, 198, 51, 100, 10, 0}
	toOtherMAC := tcp(agentIP, upstream, 443)
	toOtherMAC.DstMAC = otherMAC
	toBroadcast := udp(upstream, 9999)
	toBroadcast.DstMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ipv6 := packet.Frame{SrcMAC: agentMAC, DstMAC: gwMAC, EtherType: packet.EtherTypeIPv6}
	lldp := packet.Frame{SrcMAC: agentMAC, DstMAC: gwMAC, EtherType: 0x88cc}
	vlan := packet.Frame{SrcMAC: agentMAC, DstMAC: gwMAC, EtherType: 0x8100}

	tests := []struct {
		name   string
		port   uint32
		data   []byte
		reason Reason
	}{
		{"tcp granted port", agentPort, tcp(agentIP, upstream, 443).Bytes(), AllowGrant},
		{"tcp other port denied", agentPort, tcp(agentIP, upstream, 444).Bytes(), DropNoRule},
		{"udp any port of proto", agentPort, udp(upstream, 9999).Bytes(), AllowGrant},
		{"any protocol grant, tcp", agentPort, tcp(agentIP, upstream2, 22).Bytes(), AllowGrant},
		{"any protocol grant, icmp", agentPort, icmp.Bytes(), AllowGrant},
		{"icmp without grant", agentPort, icmpDenied.Bytes(), DropNoRule},
		{"expired grant", agentPort, tcp(agentIP, upstream, 8443).Bytes(), DropExpired},
		{"ungranted destination", agentPort, tcp(agentIP, netip.MustParseAddr("203.0.113.5"), 443).Bytes(), DropNoRule},
		{"grant of another identity", otherPort, packet.TCP(otherMAC, gwMAC, otherIP, upstream, 1, 443).Bytes(), DropNoRule},
		{"spoofed source IP", agentPort, tcp(otherIP, upstream, 443).Bytes(), DropSpoofedIP},
		{"spoofed source MAC", agentPort, spoofMAC.Bytes(), DropSpoofedMAC},
		{"unknown port", unknownPort, tcp(agentIP, upstream, 443).Bytes(), DropUnknownPort},
		{"gateway dns udp", agentPort, udp(gatewayIP, 53).Bytes(), AllowGateway},
		{"gateway dns tcp", agentPort, tcp(agentIP, gatewayIP, 53).Bytes(), AllowGateway},
		{"gateway proxy", agentPort, tcp(agentIP, gatewayIP, 8080).Bytes(), AllowGateway},
		{"gateway other port", agentPort, tcp(agentIP, gatewayIP, 22).Bytes(), DropGatewayPort},
		{"gateway udp proxy port", agentPort, udp(gatewayIP, 8080).Bytes(), DropGatewayPort},
		{"dns to granted upstream", agentPort, udp(upstream, DNSPort).Bytes(), DropDNSBypass},
		{"dot to granted upstream", agentPort, tcp(agentIP, upstream2, DoTPort).Bytes(), DropDNSBypass},
		{"ip options", agentPort, withOptions.Bytes(), DropIPOptions},
		{"loose source route", agentPort, lsrr.Bytes(), DropIPOptions},
		{"strict source route to the gateway's dns", agentPort, ssrr.Bytes(), DropIPOptions},
		{"more fragments", agentPort, moreFrags.Bytes(), DropFragment},
		{"later fragment", agentPort, laterFrag.Bytes(), DropFragment},
		{"don't fragment is fine", agentPort, dontFrag.Bytes(), AllowGrant},
		{"truncated ports", agentPort, shortPorts.Bytes(), DropMalformed},
		{"ihl below 5", agentPort, badIHL.Bytes(), DropMalformed},
		{"ihl beyond frame", agentPort, hugeIHL.Bytes(), DropIPOptions},
		{"to another agent's mac", agentPort, toOtherMAC.Bytes(), DropEastWest},
		{"to the broadcast mac", agentPort, toBroadcast.Bytes(), DropEastWest},
		{"to another agent's address via the gateway", agentPort, tcp(agentIP, otherIP, 7000).Bytes(), DropEastWest},
		{"to another bridge's subnet", agentPort, tcp(agentIP, netip.MustParseAddr("10.200.1.5"), 80).Bytes(), DropEastWest},
		{"to the metadata address, unlicensed grant", agentPort, tcp(agentIP, metadata, 80).Bytes(), DropRestricted},
		{"to a private address, licensed grant", agentPort, tcp(agentIP, privateDB, 5432).Bytes(), AllowGrant},
		{"to the broadcast address, any-protocol grant", agentPort, udp(broadcast, 9).Bytes(), DropRestricted},
		{"to a host address, unlicensed grant", agentPort, tcp(agentIP, hostAddr, 22).Bytes(), DropRestricted},
		{"arp reply to the gateway", agentPort, packet.ARPMessage(packet.ARPReply, gwMAC, agentMAC, agentIP, gwMAC, gatewayIP), AllowARP},
		{"arp request unicast to the gateway", agentPort, packet.ARPMessage(packet.ARPRequest, gwMAC, agentMAC, agentIP, make(net.HardwareAddr, 6), gatewayIP), AllowARP},
		{"arp request unicast to another agent", agentPort, packet.ARPMessage(packet.ARPRequest, otherMAC, agentMAC, agentIP, make(net.HardwareAddr, 6), gatewayIP), DropARP},
		{"arp reply claiming the gateway, to another agent", agentPort, packet.ARPMessage(packet.ARPReply, otherMAC, agentMAC, agentIP, otherMAC, gatewayIP), DropARP},
		{"arp reply broadcast", agentPort, packet.ARPMessage(packet.ARPReply, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, agentMAC, agentIP, gwMAC, gatewayIP), DropARP},
		{"rarp opcode", agentPort, packet.ARPMessage(3, gwMAC, agentMAC, agentIP, gwMAC, gatewayIP), DropARP},
		{"ipv6", agentPort, ipv6.Bytes(), DropIPv6},
		{"non-ip ethertype", agentPort, lldp.Bytes(), DropNonIP},
		{"vlan tagged", agentPort, vlan.Bytes(), DropNonIP},
		{"arp for gateway", agentPort, packet.ARP(agentMAC, agentIP, gatewayIP), AllowARP},
		{"arp for another agent", agentPort, packet.ARP(agentMAC, agentIP, otherIP), DropARP},
		{"arp with foreign sender ip", agentPort, packet.ARP(agentMAC, otherIP, gatewayIP), DropARP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counterOf(t, d, tt.reason)
			verdict, mark := run(t, d, tt.port, tt.data)
			want, wantMark := uint32(tcActShot), uint32(0x1234)
			if tt.reason.Allowed() {
				want, wantMark = tcActOK, api.AllowMark|0x1234
			}
			if verdict != want {
				t.Errorf("verdict = %d, want %d (%s)", verdict, want, tt.reason)
			}
			if mark != wantMark {
				t.Errorf("mark = %#x, want %#x", mark, wantMark)
			}
			if got := counterOf(t, d, tt.reason); got.Packets != before.Packets+1 || got.Bytes != before.Bytes+uint64(len(tt.data)) {
				t.Errorf("counter %s/%s moved from %+v to %+v, want +1 packet, +%d bytes", tt.reason.Verdict(), tt.reason, before, got, len(tt.data))
			}
		})
	}
}

func counterOf(t testing.TB, d *Datapath, r Reason) Counter {
	t.Helper()
	cs, err := d.Counters()
	must(t, err)
	return cs[r]
}

func TestGrantLifecycle(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	f := tcp(agentIP, netip.MustParseAddr("203.0.113.9"), 8000).Bytes()
	key := GrantKey{Identity: agentID, Dst: netip.MustParseAddr("203.0.113.9"), Proto: 6, Port: 8000}

	if v, _ := run(t, d, agentPort, f); v != tcActShot {
		t.Fatalf("before grant: verdict %d, want drop", v)
	}
	must(t, d.PutGrant(Grant{GrantKey: key, Expires: time.Now().Add(300 * time.Millisecond)}))
	if v, _ := run(t, d, agentPort, f); v != tcActOK {
		t.Fatalf("with grant: verdict %d, want pass", v)
	}
	time.Sleep(400 * time.Millisecond)
	if v, _ := run(t, d, agentPort, f); v != tcActShot {
		t.Fatalf("after expiry: verdict %d, want drop", v)
	}
	// Listing reports the expired entry with its expiry in the past, which
	// is how grants.Manager's sweep finds it.
	gs, err := d.Grants()
	must(t, err)
	i := slices.IndexFunc(gs, func(g Grant) bool { return g.GrantKey == key })
	if i < 0 || gs[i].Expires.IsZero() || gs[i].Expires.After(time.Now()) {
		t.Fatalf("grants after expiry = %+v, want %v listed as expired", gs, key)
	}
	must(t, d.PutGrant(Grant{GrantKey: key}))
	if ok, err := d.DeleteGrant(key); err != nil || !ok {
		t.Fatalf("DeleteGrant = %v, %v", ok, err)
	}
	if v, _ := run(t, d, agentPort, f); v != tcActShot {
		t.Fatalf("after delete: verdict %d, want drop", v)
	}
	if err := d.PutGrant(Grant{GrantKey: GrantKey{Identity: 1, Dst: upstream, Port: 80}}); err == nil {
		t.Fatal("port without protocol accepted")
	}
	if err := d.PutGrant(Grant{GrantKey: GrantKey{Identity: 1, Dst: netip.MustParseAddr("2001:db8::1")}}); err == nil {
		t.Fatal("IPv6 destination accepted")
	}
}

func TestEndpointRemovalBlocks(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	f := tcp(agentIP, upstream, 443).Bytes()
	if v, _ := run(t, d, agentPort, f); v != tcActOK {
		t.Fatalf("verdict %d, want pass", v)
	}
	must(t, d.DeleteEndpoint(agentPort))
	if v, _ := run(t, d, agentPort, f); v != tcActShot {
		t.Fatalf("after endpoint removal: verdict %d, want drop", v)
	}
}

func TestServicesReplace(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	must(t, d.SetServices([]Service{{gatewayIP, 17, 53}}))
	if v, _ := run(t, d, agentPort, tcp(agentIP, gatewayIP, 8080).Bytes()); v != tcActShot {
		t.Fatalf("proxy after services replaced: verdict %d, want drop", v)
	}
	if v, _ := run(t, d, agentPort, udp(gatewayIP, 53).Bytes()); v != tcActOK {
		t.Fatalf("dns after services replaced: verdict %d, want pass", v)
	}
}

func TestDropEvents(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	events := make(chan DropEvent, 16)
	go func() { _ = d.ReadDropEvents(ctx, func(e DropEvent) { events <- e }) }()

	run(t, d, agentPort, tcp(agentIP, upstream, 444).Bytes())
	select {
	case e := <-events:
		want := DropEvent{Ifindex: agentPort, Identity: agentID, Reason: DropNoRule, EtherType: 0x0800, Proto: 6,
			Src: agentIP, Dst: upstream, SrcPort: 40000, DstPort: 444, SYN: true, Boot: e.Boot}
		if e != want {
			t.Errorf("event = %+v\nwant    %+v", e, want)
		}
	case <-ctx.Done():
		t.Fatal("no drop event")
	}
	// An allowed packet produces no event.
	run(t, d, agentPort, tcp(agentIP, upstream, 443).Bytes())
	select {
	case e := <-events:
		t.Errorf("event for an allowed packet: %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestDropEventLayout decodes a record laid out as the program writes it:
// the boot time, the flow the parser filled in, whole, then the reason.
func TestDropEventLayout(t *testing.T) {
	spec, err := loadPortIngress()
	must(t, err)
	var ev *btf.Struct
	must(t, spec.Types.TypeByName("drop_event", &ev))
	if got := binary.Size(portIngressDropEvent{}); got != int(ev.Size) {
		t.Fatalf("Go record is %d bytes, struct drop_event %d", got, ev.Size)
	}
	rec := binary.NativeEndian.AppendUint64(nil, 12345)
	rec = binary.NativeEndian.AppendUint32(rec, agentPort)
	rec = binary.NativeEndian.AppendUint32(rec, agentID)
	rec = append(rec, agentIP.AsSlice()...)
	rec = append(rec, upstream.AsSlice()...)
	rec = binary.NativeEndian.AppendUint16(rec, 40000)
	rec = binary.NativeEndian.AppendUint16(rec, 53)
	rec = binary.NativeEndian.AppendUint16(rec, 0x0800)
	rec = append(rec, 17, 0)
	rec = binary.NativeEndian.AppendUint32(rec, uint32(DropDNSBypass))
	rec = binary.NativeEndian.AppendUint32(rec, 0)
	var raw portIngressDropEvent
	if _, err := binary.Decode(rec, binary.NativeEndian, &raw); err != nil {
		t.Fatal(err)
	}
	want := DropEvent{Ifindex: agentPort, Identity: agentID, Reason: DropDNSBypass, EtherType: 0x0800, Proto: 17,
		Src: agentIP, Dst: upstream, SrcPort: 40000, DstPort: 53, Boot: 12345}
	if got := dropEventOf(&raw); got != want {
		t.Errorf("event = %+v\nwant    %+v", got, want)
	}
}

func TestDropEventsAreRateLimited(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n atomic.Int64
	go func() { _ = d.ReadDropEvents(ctx, func(DropEvent) { n.Add(1) }) }()
	// 300 drops in well under a second on one CPU: at most 100 events
	// (two windows at worst if the run straddles a second boundary).
	in := skbContext{IngressIfindex: agentPort}
	if _, err := d.objs.OutcallPortIngress.Run(&ebpf.RunOptions{Data: tcp(agentIP, upstream, 444).Bytes(), Context: in, Repeat: 300}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := n.Load(); got == 0 || got > 200 {
		t.Errorf("%d events for 300 drops, want 1..200", got)
	}
}

// TestStaleCountersReplaced opens over the pins of a version whose counters
// map had room for fewer reasons: the map is replaced, the load succeeds.
func TestStaleCountersReplaced(t *testing.T) {
	dir := testPinDir(t)
	spec, err := loadPortIngress()
	must(t, err)
	old := spec.Maps["counters"].Copy()
	old.MaxEntries = 16
	old.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(old)
	if err != nil {
		privtest.Skip(t, "cannot create BPF map: "+err.Error())
	}
	must(t, os.MkdirAll(dir, 0o700))
	must(t, m.Pin(filepath.Join(dir, "counters")))
	m.Close()

	d, err := Open(Options{PinDir: dir})
	if err != nil {
		t.Fatalf("Open over stale counters: %v", err)
	}
	defer d.Close()
	defer d.Unpin()
	if got, want := d.objs.Counters.MaxEntries(), spec.Maps["counters"].MaxEntries; got != want {
		t.Errorf("counters map has %d entries, want %d", got, want)
	}
	if _, err := d.Counters(); err != nil {
		t.Errorf("Counters: %v", err)
	}
}
