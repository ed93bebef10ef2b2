package lab

import (
	"errors"
	"net"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// ServeTCP answers "ok\n" on every connection to addr inside ns until the
// test ends.
func ServeTCP(t testing.TB, ns, addr string) {
	t.Helper()
	var l net.Listener
	if err := Do(ns, func() (err error) { l, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatalf("listen tcp %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte("ok\n"))
			c.Close()
		}
	}()
}

// ServeUDP echoes every datagram to addr inside ns until the test ends.
func ServeUDP(t testing.TB, ns, addr string) {
	t.Helper()
	var c net.PacketConn
	if err := Do(ns, func() (err error) { c, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo(buf[:n], from)
		}
	}()
}

// Probe timeouts: long enough for a veth round trip on a loaded 2-core
// machine, short enough that a suite of blocked probes stays quick.
const probeTimeout = 800 * time.Millisecond

// TCP reports whether a connection from ns to addr completes and the
// responder's greeting arrives.
func TCP(ns, addr string) bool { return TCPFrom(ns, 0, addr) }

// UDP reports whether a datagram from ns to addr is echoed back.
func UDP(ns, addr string) bool { return UDPFrom(ns, 0, addr) }

// UDPFrom reports whether a datagram from ns, sent from local port lport,
// to addr is echoed back: the same 5-tuple every call.
func UDPFrom(ns string, lport int, addr string) bool {
	ok := false
	_ = Do(ns, func() error {
		raddr, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return nil
		}
		c, err := net.DialUDP("udp4", &net.UDPAddr{Port: lport}, raddr)
		if err != nil {
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeTimeout))
		if _, err := c.Write([]byte("probe")); err != nil {
			return nil
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		ok = err == nil && string(buf[:n]) == "probe"
		return nil
	})
	return ok
}

// TCPFrom is TCP from local port lport: the same 4-tuple every call.
func TCPFrom(ns string, lport int, addr string) bool {
	ok := false
	_ = Do(ns, func() error {
		d := net.Dialer{Timeout: probeTimeout, LocalAddr: &net.TCPAddr{Port: lport},
			Control: func(_, _ string, rc syscall.RawConn) error { return reuseAddr(rc) }}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeTimeout))
		buf := make([]byte, 3)
		n, err := c.Read(buf)
		ok = err == nil && n == 3 && string(buf) == "ok\n"
		return nil
	})
	return ok
}

// reuseAddr lets a probe bind a local port a closed connection used.
func reuseAddr(rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// ICMP reports whether an echo request from ns to dst is answered.
func ICMP(ns, dst string) bool {
	ok := false
	_ = Do(ns, func() error {
		c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		id := os.Getpid() & 0xffff
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("outcall")}}
		b, _ := msg.Marshal(nil)
		if _, err := c.WriteTo(b, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
			return nil
		}
		deadline := time.Now().Add(probeTimeout)
		_ = c.SetReadDeadline(deadline)
		buf := make([]byte, 1500)
		for time.Now().Before(deadline) {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return nil
				}
				return nil
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply || from.String() != dst {
				continue
			}
			if e, isEcho := m.Body.(*icmp.Echo); isEcho && e.ID == id {
				ok = true
				return nil
			}
		}
		return nil
	})
	return ok
}

// mustReach is the positive control of a negative probe: it fails the test
// at once unless probe (TCP, UDP or ICMP), run from ns, is answered by each
// dst. A probe that gets no answer tells "blocked" from "probe broken" only
// where the same probe reaches the same responder another way: from the
// lab's host namespace (which routes to upstream and to the agents), from
// the agent after a grant, or across a plain bridge.
func mustReach(t testing.TB, probe func(ns, dst string) bool, ns string, dsts ...string) {
	t.Helper()
	for _, dst := range dsts {
		if !probe(ns, dst) {
			t.Fatalf("positive control: %s from %s to %s got no answer: the responder or the probe is broken, so a blocked probe there proves nothing",
				probeName(probe), ns, dst)
		}
	}
}

// probeName is the name of a probe function ("TCP"), for messages.
func probeName(probe func(ns, dst string) bool) string {
	name := runtime.FuncForPC(reflect.ValueOf(probe).Pointer()).Name()
	return name[strings.LastIndex(name, ".")+1:]
}

// Prober runs a probe over and over in the background, at most max times,
// counting the runs and the runs that got through (leaks).
type Prober struct {
	leaks, probes atomic.Int64
	stop, done    chan struct{}
}

// StartProber starts probing; leaked reports whether one probe got through.
func StartProber(max int, leaked func() bool) *Prober {
	p := &Prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for range max {
			select {
			case <-p.stop:
				return
			default:
			}
			p.probes.Add(1)
			if leaked() {
				p.leaks.Add(1)
			}
		}
	}()
	return p
}

// Stop ends the probing and returns the leaks and the probes run.
func (p *Prober) Stop() (leaks, probes int64) {
	close(p.stop)
	<-p.done
	return p.leaks.Load(), p.probes.Load()
}
