package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"outcall.dev/outcall/internal/privtest"
	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/network/networktest"
)

// serviceKey mirrors the datapath's services map key.
type serviceKey struct {
	Gateway [4]byte
	Port    uint16
	Proto   uint8
	Pad     uint8
}

// testServiceController is a Controller over a real datapath pinned in a
// test directory (so the test can read the services map as the kernel has
// it) and fakes of the floor and bridges, with two networks whose gateways
// are loopback addresses only this test's sockets use: outcall-default on
// 127.0.0.1 and outcall-second on 127.0.0.5.
func testServiceController(t *testing.T) (*Controller, *ebpf.Map) {
	t.Helper()
	privtest.Root(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	pin := "/sys/fs/bpf/octest-svc-" + hex.EncodeToString(b)
	t.Cleanup(func() { os.RemoveAll(pin) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	second := `[{"name":"outcall-second","bridge":"ocbr-second","gateway":"127.0.0.5/30"}]`
	if err := os.WriteFile(filepath.Join(dir, "networks.json"), []byte(second), 0o600); err != nil {
		t.Fatal(err)
	}
	reg, err := endpoint.Open(filepath.Join(dir, "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	calls := &networktest.Calls{}
	c, err := New(Options{
		Default:         Network{Name: api.DefaultNetworkName, Bridge: "outcall0", Gateway: netip.MustParsePrefix("127.0.0.1/30")},
		SubnetBlock:     netip.MustParsePrefix("10.200.0.0/16"),
		StatePath:       filepath.Join(dir, "networks.json"),
		OpenDatapath:    OpenDatapath,
		DatapathOptions: datapath.Options{PinDir: pin},
		Floor:           networktest.NewFloor(calls), Bridges: networktest.NewBridges(calls),
		Endpoints: reg, Events: events.New(),
		HostAddrs: func() ([]netip.Addr, error) { return nil, nil },
		Logger:    log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Up(); err != nil {
		privtest.Skip(t, "cannot load the datapath: "+err.Error())
	}
	t.Cleanup(c.Shutdown)
	m, err := ebpf.LoadPinnedMap(filepath.Join(pin, "services"), nil)
	if err != nil {
		t.Fatalf("open pinned services map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return c, m
}

// mapServices lists the services map as "gateway proto/port", sorted.
func mapServices(t *testing.T, m *ebpf.Map) string {
	t.Helper()
	var k serviceKey
	var v uint8
	var out []string
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, netip.AddrFrom4(k.Gateway).String()+" "+datapath.ProtoName(k.Proto)+"/"+strconv.Itoa(int(k.Port)))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// freePort returns a port that nothing on loopback holds right now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Skip("picked port is taken for UDP; rerun")
	}
	u.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// TestServiceOpenOnlyWhileListening (defect 6): a gateway service port is in
// the datapath's services map exactly while Outcall's own listener holds
// it, and only on the gateway of the listener's network; nothing is open by
// default.
func TestServiceOpenOnlyWhileListening(t *testing.T) {
	d, m := testServiceController(t)
	if got := mapServices(t, m); got != "" {
		t.Fatalf("services open with no listener: %v", got)
	}
	port := freePort(t)
	p := strconv.Itoa(int(port))
	ctx := context.Background()
	if _, err := d.ListenTCPService(ctx, "outcall-none", port); err == nil || !strings.Contains(err.Error(), `no network "outcall-none"`) {
		t.Fatalf("a service on an unknown network: %v", err)
	}
	l, err := d.ListenTCPService(ctx, api.DefaultNetworkName, port)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr().String() != "127.0.0.1:"+p {
		t.Errorf("listener bound to %s, want the gateway address", l.Addr())
	}
	u, err := d.ListenUDPService(ctx, "outcall-second", port)
	if err != nil {
		t.Fatal(err)
	}
	if u.LocalAddr().String() != "127.0.0.5:"+p {
		t.Errorf("listener bound to %s, want the second gateway's address", u.LocalAddr())
	}
	if got, want := mapServices(t, m), "127.0.0.1 tcp/"+p+", 127.0.0.5 udp/"+p; got != want {
		t.Errorf("services map %q, want %q", got, want)
	}
	// The listener works: a connection reaches it.
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatalf("dial the service listener: %v", err)
	}
	c.Close()

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := mapServices(t, m), "127.0.0.5 udp/"+p; got != want {
		t.Errorf("after closing the TCP listener: %q, want %q", got, want)
	}
	_ = l.Close() // a second Close does not release twice
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mapServices(t, m); got != "" {
		t.Errorf("services open after every listener closed: %v", got)
	}
}

// TestServiceForeignHolder: a port already held on the wildcard address by
// someone else is a clear error naming the port and the holder, and opens
// nothing.
func TestServiceForeignHolder(t *testing.T) {
	d, m := testServiceController(t)
	port := freePort(t)
	foreign, err := net.Listen("tcp4", "0.0.0.0:"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	foreignUDP, err := net.ListenPacket("udp4", "0.0.0.0:"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer foreignUDP.Close()
	self := "pid " + strconv.Itoa(os.Getpid()) + " ("
	if _, err := d.ListenTCPService(context.Background(), api.DefaultNetworkName, port); err == nil {
		t.Fatal("ListenTCPService succeeded on a port a foreign listener holds")
	} else if !strings.Contains(err.Error(), "gateway service tcp/"+strconv.Itoa(int(port))) || !strings.Contains(err.Error(), self) {
		t.Errorf("error %q does not name the port and the holder %q", err, self)
	}
	if _, err := d.ListenUDPService(context.Background(), api.DefaultNetworkName, port); err == nil {
		t.Fatal("ListenUDPService succeeded on a port a foreign socket holds")
	} else if !strings.Contains(err.Error(), "gateway service udp/"+strconv.Itoa(int(port))) || !strings.Contains(err.Error(), self) {
		t.Errorf("error %q does not name the port and the holder %q", err, self)
	}
	if got := mapServices(t, m); got != "" {
		t.Errorf("a failed listen opened %v", got)
	}
}
