package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"outcall.dev/outcall/internal/packet"
	"outcall.dev/outcall/internal/privtest"
)

// A second Outcall network: its own bridge (gateway MAC), gateway and
// endpoint.
var (
	net2MAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0c}
	net2GwMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	net2IP    = netip.MustParseAddr("10.201.0.10")
	gateway2  = netip.MustParseAddr("10.201.0.1")
)

const (
	net2Port = 4545
	net2ID   = 9
)

// TestServicesPerGateway runs the program on frames from endpoints of two
// networks: a service opens its port on the one gateway it names, and the
// same port on the other network's gateway stays closed.
func TestServicesPerGateway(t *testing.T) {
	d := openTest(t)
	must(t, d.SetEndpoint(agentPort, Endpoint{Identity: agentID, IP: agentIP, Gateway: gatewayIP, MAC: agentMAC, GatewayMAC: gwMAC}))
	must(t, d.SetEndpoint(net2Port, Endpoint{Identity: net2ID, IP: net2IP, Gateway: gateway2, MAC: net2MAC, GatewayMAC: net2GwMAC}))
	// DNS listeners on the first gateway only; a proxy on the second only.
	must(t, d.SetServices([]Service{{gatewayIP, 17, 53}, {gatewayIP, 6, 53}, {gateway2, 6, 8080}}))

	udp1 := func(dst netip.Addr, port uint16) []byte {
		return packet.UDP(agentMAC, gwMAC, agentIP, dst, 40000, port).Bytes()
	}
	tcp1 := func(dst netip.Addr, port uint16) []byte {
		return packet.TCP(agentMAC, gwMAC, agentIP, dst, 40000, port).Bytes()
	}
	udp2 := func(dst netip.Addr, port uint16) []byte {
		return packet.UDP(net2MAC, net2GwMAC, net2IP, dst, 40000, port).Bytes()
	}
	tcp2 := func(dst netip.Addr, port uint16) []byte {
		return packet.TCP(net2MAC, net2GwMAC, net2IP, dst, 40000, port).Bytes()
	}

	steps := []struct {
		name   string
		port   uint32
		data   []byte
		reason Reason
	}{
		{"G1 endpoint to G1 udp/53, open on G1", agentPort, udp1(gatewayIP, 53), AllowGateway},
		{"G1 endpoint to G1 tcp/53, open on G1", agentPort, tcp1(gatewayIP, 53), AllowGateway},
		{"G2 endpoint to G2 udp/53, open on G1 only", net2Port, udp2(gateway2, 53), DropGatewayPort},
		{"G2 endpoint to G2 tcp/53, open on G1 only", net2Port, tcp2(gateway2, 53), DropGatewayPort},
		// Positive control: the G2 endpoint reaches what is open on G2.
		{"G2 endpoint to G2 tcp/8080, open on G2", net2Port, tcp2(gateway2, 8080), AllowGateway},
		{"G1 endpoint to G1 tcp/8080, open on G2 only", agentPort, tcp1(gatewayIP, 8080), DropGatewayPort},
		// G1 is not the G2 endpoint's gateway: DNS to it is a bypass,
		// whatever is open on G1.
		{"G2 endpoint to G1 udp/53", net2Port, udp2(gatewayIP, 53), DropDNSBypass},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) { expectVerdict(t, d, s.port, s.data, s.reason, "") })
	}

	// Moving DNS to G2 opens it there and closes it on G1.
	must(t, d.SetServices([]Service{{gateway2, 17, 53}, {gateway2, 6, 8080}}))
	t.Run("after the move, G2 endpoint to G2 udp/53", func(t *testing.T) {
		expectVerdict(t, d, net2Port, udp2(gateway2, 53), AllowGateway, "")
	})
	t.Run("after the move, G1 endpoint to G1 udp/53", func(t *testing.T) {
		expectVerdict(t, d, agentPort, udp1(gatewayIP, 53), DropGatewayPort, "")
	})
	if got := serviceSet(t, d); len(got) != 2 || !got[Service{gateway2, 17, 53}] || !got[Service{gateway2, 6, 8080}] {
		t.Errorf("services map holds %v, want udp/53 and tcp/8080 on %s", got, gateway2)
	}
}

// TestSetServicesRejectsBadGateway: a service without an IPv4 gateway is an
// error naming the gateway, and the services in place stay.
func TestSetServicesRejectsBadGateway(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	before := serviceSet(t, d)
	for _, tt := range []struct {
		gw   netip.Addr
		want string
	}{
		{netip.Addr{}, "gateway address is invalid"},
		{netip.MustParseAddr("2001:db8::1"), "gateway 2001:db8::1 is not an IPv4 address"},
		{netip.MustParseAddr("::ffff:10.200.0.1"), "gateway ::ffff:10.200.0.1 is not an IPv4 address"},
	} {
		err := d.SetServices([]Service{{gatewayIP, 17, 5353}, {tt.gw, 17, 53}})
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "udp/53") {
			t.Errorf("SetServices with gateway %v: error %v, want one containing %q and udp/53", tt.gw, err, tt.want)
		}
	}
	after := serviceSet(t, d)
	if len(after) != len(before) {
		t.Fatalf("services changed by a refused set: %v, was %v", after, before)
	}
	for s := range before {
		if !after[s] {
			t.Fatalf("services changed by a refused set: %v, was %v", after, before)
		}
	}
	expectVerdict(t, d, agentPort, udp(gatewayIP, 53).Bytes(), AllowGateway, "")
}

// TestServiceKeyLayout: the key is the gateway's address in network byte
// order, then the port in host order and the protocol, as BTF names them
// (so `bpftool map dump` prints named fields), and Go's mirror is its size.
func TestServiceKeyLayout(t *testing.T) {
	spec, err := loadPortIngress()
	must(t, err)
	var st *btf.Struct
	must(t, spec.Types.TypeByName("service_key", &st))
	if got := binary.Size(portIngressServiceKey{}); got != int(st.Size) || st.Size != 8 {
		t.Fatalf("Go key is %d bytes, struct service_key %d, want 8", got, st.Size)
	}
	want := []struct {
		name string
		off  btf.Bits
		size uint32
	}{{"gateway", 0, 4}, {"port", 32, 2}, {"proto", 48, 1}, {"pad", 56, 1}}
	if len(st.Members) != len(want) {
		t.Fatalf("struct service_key has %d members, want %d", len(st.Members), len(want))
	}
	for i, w := range want {
		m := st.Members[i]
		size, err := btf.Sizeof(m.Type)
		must(t, err)
		if m.Name != w.name || m.Offset != w.off || uint32(size) != w.size {
			t.Errorf("member %d is %s at bit %d, %d bytes; want %s at bit %d, %d bytes", i, m.Name, m.Offset, size, w.name, w.off, w.size)
		}
	}
	if key, ok := spec.Maps["services"].Key.(*btf.Struct); !ok || key.Name != "service_key" {
		t.Errorf("services map key type is %v, want struct service_key", spec.Maps["services"].Key)
	}

	d := openTest(t)
	must(t, d.SetServices([]Service{{gatewayIP, 17, 53}}))
	var raw []byte
	var v uint8
	it := d.objs.Services.Iterate()
	for it.Next(&raw, &v) {
		port := binary.NativeEndian.AppendUint16(nil, 53)
		if w := []byte{10, 200, 0, 1, port[0], port[1], 17, 0}; string(raw) != string(w) {
			t.Errorf("key bytes % x, want % x", raw, w)
		}
	}
	must(t, it.Err())
}

// TestStaleServicesReplaced opens over the pins of a version whose services
// key had no gateway address: the map is replaced, not reused, and starts
// empty, which loses nothing because the daemon writes the services it holds
// on every start (SetServices in up()).
func TestStaleServicesReplaced(t *testing.T) {
	dir := testPinDir(t)
	spec, err := loadPortIngress()
	must(t, err)
	// Only the key differs: { port, proto, pad }.
	cur := spec.Maps["services"]
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "services", Type: cur.Type, KeySize: 4, ValueSize: cur.ValueSize, MaxEntries: cur.MaxEntries, Flags: cur.Flags})
	if err != nil {
		privtest.Skip(t, "cannot create BPF map: "+err.Error())
	}
	port := binary.NativeEndian.AppendUint16(nil, 53)
	must(t, old.Put([]byte{port[0], port[1], 17, 0}, uint8(1))) // udp/53, the old layout
	must(t, os.MkdirAll(dir, 0o700))
	must(t, old.Pin(filepath.Join(dir, "services")))
	old.Close()

	d, err := Open(Options{PinDir: dir})
	if err != nil {
		t.Fatalf("Open over a stale services map: %v", err)
	}
	defer d.Close()
	defer d.Unpin()
	if got := d.objs.Services.KeySize(); got != 8 {
		t.Fatalf("services key is %d bytes, want 8", got)
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(dir, "services"), nil)
	must(t, err)
	if got := pinned.KeySize(); got != 8 {
		t.Errorf("pinned services key is %d bytes, want 8", got)
	}
	pinned.Close()
	if got := serviceSet(t, d); len(got) != 0 {
		t.Errorf("replaced services map holds %v, want nothing until SetServices", got)
	}
	seed(t, d)
	expectVerdict(t, d, agentPort, udp(gatewayIP, 53).Bytes(), AllowGateway, "")
}

// serviceSet reads the services map back.
func serviceSet(t *testing.T, d *Datapath) map[Service]bool {
	t.Helper()
	out := map[Service]bool{}
	var k portIngressServiceKey
	var v uint8
	it := d.objs.Services.Iterate()
	for it.Next(&k, &v) {
		out[serviceOf(k)] = true
	}
	must(t, it.Err())
	return out
}
