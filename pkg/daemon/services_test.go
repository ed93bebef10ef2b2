package daemon

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
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"outcall.dev/outcall/internal/privtest"
	"outcall.dev/outcall/pkg/datapath"
)

// serviceKey mirrors the datapath's services map key.
type serviceKey struct {
	Port  uint16
	Proto uint8
	Pad   uint8
}

// testServiceDaemon is a Daemon with only what the service seam uses: a
// datapath pinned in a test directory (so the test can read the services
// map as the kernel has it) and loopback as the gateway, which only this
// test's sockets use.
func testServiceDaemon(t *testing.T) (*Daemon, *ebpf.Map) {
	t.Helper()
	privtest.Root(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	pin := "/sys/fs/bpf/octest-svc-" + hex.EncodeToString(b)
	t.Cleanup(func() { os.RemoveAll(pin) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dp, err := datapath.Open(datapath.Options{PinDir: pin, Logger: log})
	if err != nil {
		privtest.Skip(t, "cannot load the datapath: "+err.Error())
	}
	d := &Daemon{cfg: Config{Gateway: netip.MustParsePrefix("127.0.0.1/8")}, log: log, dp: dp, services: map[datapath.Service]int{}}
	t.Cleanup(func() { dp.Close() })
	m, err := ebpf.LoadPinnedMap(filepath.Join(pin, "services"), nil)
	if err != nil {
		t.Fatalf("open pinned services map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return d, m
}

// mapServices lists the services map as "proto/port".
func mapServices(t *testing.T, m *ebpf.Map) []string {
	t.Helper()
	var k serviceKey
	var v uint8
	var out []string
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, datapath.ProtoName(k.Proto)+"/"+strconv.Itoa(int(k.Port)))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
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
// it; nothing is open by default.
func TestServiceOpenOnlyWhileListening(t *testing.T) {
	d, m := testServiceDaemon(t)
	d.mu.Lock()
	err := d.dp.SetServices(d.servicesLocked()) // what up() does
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := mapServices(t, m); len(got) != 0 {
		t.Fatalf("services open with no listener: %v", got)
	}
	port := freePort(t)
	ctx := context.Background()
	l, err := d.ListenTCPService(ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr().String() != "127.0.0.1:"+strconv.Itoa(int(port)) {
		t.Errorf("listener bound to %s, want the gateway address", l.Addr())
	}
	u, err := d.ListenUDPService(ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	want := "tcp/" + strconv.Itoa(int(port)) + " udp/" + strconv.Itoa(int(port))
	if got := strings.Join(mapServices(t, m), " "); got != want && got != "udp/"+strconv.Itoa(int(port))+" tcp/"+strconv.Itoa(int(port)) {
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
	if got := strings.Join(mapServices(t, m), " "); got != "udp/"+strconv.Itoa(int(port)) {
		t.Errorf("after closing the TCP listener: %q, want only udp", got)
	}
	_ = l.Close() // a second Close does not release twice
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mapServices(t, m); len(got) != 0 {
		t.Errorf("services open after every listener closed: %v", got)
	}
}

// TestServiceForeignHolder: a port already held on the wildcard address by
// someone else is a clear error naming the port and the holder, and opens
// nothing.
func TestServiceForeignHolder(t *testing.T) {
	d, m := testServiceDaemon(t)
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
	if _, err := d.ListenTCPService(context.Background(), port); err == nil {
		t.Fatal("ListenTCPService succeeded on a port a foreign listener holds")
	} else if !strings.Contains(err.Error(), "gateway service tcp/"+strconv.Itoa(int(port))) || !strings.Contains(err.Error(), self) {
		t.Errorf("error %q does not name the port and the holder %q", err, self)
	}
	if _, err := d.ListenUDPService(context.Background(), port); err == nil {
		t.Fatal("ListenUDPService succeeded on a port a foreign socket holds")
	} else if !strings.Contains(err.Error(), "gateway service udp/"+strconv.Itoa(int(port))) || !strings.Contains(err.Error(), self) {
		t.Errorf("error %q does not name the port and the holder %q", err, self)
	}
	if got := mapServices(t, m); len(got) != 0 {
		t.Errorf("a failed listen opened %v", got)
	}
}
