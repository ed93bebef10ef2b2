package network

import (
	"net"
	"net/netip"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestServicePacketConnSyscallConn: the UDP wrapper hands out raw access
// to its own socket, which cannot close it, and only Close (the port to
// containers first, then the socket) ends it.
func TestServicePacketConnSyscallConn(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	w := &servicePacketConn{PacketConn: &closeRecorder{pc.(rawPacketConn), &order}, release: func() error {
		order = append(order, "release")
		return nil
	}}
	var _ syscall.Conn = w
	raw, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// The raw socket is the listener's: getsockname names its address.
	var sa unix.Sockaddr
	var serr error
	if err := raw.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil || serr != nil {
		t.Fatalf("getsockname: %v, %v", err, serr)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		t.Fatalf("socket address %T, want IPv4", sa)
	}
	got := netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
	if want := pc.LocalAddr().(*net.UDPAddr).AddrPort(); got != want {
		t.Fatalf("raw socket bound to %s, want the listener's %s", got, want)
	}
	// Positive control: the socket works through the wrapper.
	if _, err := w.WriteTo([]byte("x"), pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, ok := any(raw).(interface{ Close() error }); ok {
		t.Fatal("the raw access can close the socket behind the wrapper")
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != "release" || order[1] != "close" {
		t.Fatalf("Close ran %v, want the release before the socket's close", order)
	}
	if err := raw.Control(func(uintptr) {}); err == nil {
		t.Fatal("the raw access still reaches a closed socket")
	}

	// A socket without raw access says so.
	w2 := &servicePacketConn{PacketConn: noRaw{pc}, release: func() error { return nil }}
	if _, err := w2.SyscallConn(); err == nil {
		t.Fatal("SyscallConn on a socket without raw access did not fail")
	}
}

// closeRecorder is a PacketConn that notes its Close.
type closeRecorder struct {
	rawPacketConn
	order *[]string
}

// rawPacketConn is the UDP socket with its SyscallConn.
type rawPacketConn interface {
	net.PacketConn
	syscall.Conn
}

func (c *closeRecorder) Close() error {
	*c.order = append(*c.order, "close")
	return c.rawPacketConn.Close()
}

// noRaw hides a PacketConn's SyscallConn.
type noRaw struct{ net.PacketConn }
