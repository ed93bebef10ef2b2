package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/rules"
)

// TestServeUDPAndTCP answers over both transports on the gateway's
// sockets, and reports them in Status.
func TestServeUDPAndTCP(t *testing.T) {
	fx := newFixture(t, nil)
	udp, tcp := fx.serve(t)
	for _, tc := range []struct{ netw, addr string }{{"udp", udp}, {"tcp", tcp}} {
		r := exchange(t, tc.netw, tc.addr, question("www.example.test.", mdns.TypeA))
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("%s: reply %v; want the A record", tc.netw, r)
		}
	}
	st := fx.f.Status()
	if !st.Running || st.ListenAddress != "127.0.0.1" || len(st.Listeners) != 1 || st.Listeners[0] != udp ||
		st.QueriesTotal != 2 || st.QueriesAllowed != 2 || len(st.Upstreams) != 1 || st.Upstreams[0] != fx.up.addr.String() {
		t.Errorf("status %+v; want running on %s with 2 allowed queries", st, udp)
	}
}

// TestTruncation: an answer too large for UDP is fetched from the upstream
// over TCP (TC=1, FR-020, AS-010), truncated for a client without EDNS so
// that it retries over TCP, and sent whole within a client's EDNS size
// (EC-011), the OPT record and DO bit kept (AS-014).
func TestTruncation(t *testing.T) {
	fx := newFixture(t, nil)
	udp, tcp := fx.serve(t)

	r := exchange(t, "udp", udp, question("big.example.test.", mdns.TypeTXT))
	if !r.Truncated || len(r.Answer) == len(bigTXT()) {
		t.Fatalf("UDP reply TC %v with %d records; want TC and fewer than %d", r.Truncated, len(r.Answer), len(bigTXT()))
	}
	if fx.up.tcp.Load() != 1 {
		t.Errorf("upstream TCP queries %d; want 1 (the retry after its TC)", fx.up.tcp.Load())
	}
	r = exchange(t, "tcp", tcp, question("big.example.test.", mdns.TypeTXT))
	if r.Truncated || len(r.Answer) != len(bigTXT()) {
		t.Fatalf("TCP reply TC %v with %d records; want all %d", r.Truncated, len(r.Answer), len(bigTXT()))
	}

	q := question("big.example.test.", mdns.TypeTXT)
	q.SetEdns0(4096, true)
	r = exchange(t, "udp", udp, q)
	opt := r.IsEdns0()
	if r.Truncated || len(r.Answer) != len(bigTXT()) || opt == nil || !opt.Do() {
		t.Fatalf("EDNS UDP reply TC %v, %d records, OPT %v; want the whole answer with OPT and DO", r.Truncated, len(r.Answer), opt)
	}
	fx.up.mu.Lock()
	up := fx.up.lastOPT
	fx.up.mu.Unlock()
	if up == nil || !up.Do() || up.UDPSize() != 4096 {
		t.Errorf("upstream saw OPT %v; want the client's (4096, DO)", up)
	}
}

// TestMalformed: what is not a query gets nothing over UDP and a closed
// connection over TCP (EC-004); a valid query after it is answered.
func TestMalformed(t *testing.T) {
	fx := newFixture(t, func(o *Options) { o.TCPIdleTimeout = time.Minute })
	udp, tcp := fx.serve(t)
	resp := question("www.example.test.", mdns.TypeA)
	resp.Response = true
	respRaw, _ := resp.Pack()
	two := question("www.example.test.", mdns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	twoRaw, _ := two.Pack()
	for name, raw := range map[string][]byte{
		"garbage":       []byte("\x00\x01not dns at all"),
		"short header":  {0x12},
		"a response":    respRaw,
		"two questions": twoRaw,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("udp", udp)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(raw); err != nil {
				t.Fatal(err)
			}
			// Positive control on the same socket: a query sent after the
			// bad one is answered, and it is the first thing that arrives.
			good := question("www.example.test.", mdns.TypeA)
			gr, _ := good.Pack()
			if _, err := c.Write(gr); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 65535)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			r := new(mdns.Msg)
			if err := r.Unpack(buf[:n]); err != nil || r.Id != good.Id {
				t.Fatalf("first reply (id %d, err %v) is not the good query's %d: the bad one was answered", r.Id, err, good.Id)
			}

			tc, err := net.Dial("tcp", tcp)
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			framed := binary.BigEndian.AppendUint16(nil, uint16(len(raw)))
			if _, err := tc.Write(append(framed, raw...)); err != nil {
				t.Fatal(err)
			}
			_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := tc.Read(buf); err == nil || !isEOF(err) {
				t.Fatalf("TCP read %d bytes, err %v; want the connection closed", n, err)
			}
		})
	}
}

// TestTCPIdleClose: a TCP connection that sends nothing is closed after
// the idle timeout, one that does is served.
func TestTCPIdleClose(t *testing.T) {
	fx := newFixture(t, func(o *Options) { o.TCPIdleTimeout = 300 * time.Millisecond })
	_, tcp := fx.serve(t)
	c, err := mdns.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteMsg(question("www.example.test.", mdns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if r, err := c.ReadMsg(); err != nil || r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("first query: %v %v", r, err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.ReadMsg(); err == nil || !isEOF(err) {
		t.Fatalf("idle read: %v; want the server to close", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("closed after %v; want about the idle timeout", took)
	}
}

// TestServeShutdown: Serve returns once its context is done, its sockets
// closed, and the filter reports it is not running.
func TestServeShutdown(t *testing.T) {
	fx := newFixture(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fx.f.Serve(ctx, fx.gw) }()
	udp, tcp := fx.gw.addrs()
	if r := exchange(t, "tcp", tcp, question("www.example.test.", mdns.TypeA)); r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("reply %v", r)
	}
	idle, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(ShutdownGrace + 5*time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := net.Dial("tcp", tcp); err == nil {
		t.Error("TCP port still accepts after Serve returned")
	}
	pc, err := net.ListenPacket("udp", udp)
	if err != nil {
		t.Errorf("UDP port still held after Serve returned: %v", err)
	} else {
		pc.Close()
	}
	if st := fx.f.Status(); st.Running || len(st.Listeners) != 0 {
		t.Errorf("status %+v; want not running", st)
	}
}

// TestServeBindError: a port that cannot be bound is Serve's error, at
// once (EC-008).
func TestServeBindError(t *testing.T) {
	fx := newFixture(t, nil)
	fx.gw.bindErr = errors.New("address already in use")
	if err := fx.f.Serve(context.Background(), fx.gw); !errors.Is(err, ErrBind) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("Serve = %v; want ErrBind with the cause", err)
	}
	if st := fx.f.Status(); st.Running {
		t.Errorf("status %+v after a bind failure; want not running", st)
	}
}

// TestLearnBeforeReply: the direct_ip grants are written before the reply
// leaves. Learn holds until the test has checked that the client has
// received nothing yet.
func TestLearnBeforeReply(t *testing.T) {
	fx := newFixture(t, nil)
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome {
		return allow("r", &api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{443}})
	})
	udp, _ := fx.serve(t)
	c, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	inLearn, release := make(chan struct{}), make(chan struct{})
	fx.gw.onLearn = func(network.Learned) {
		close(inLearn)
		<-release
	}
	raw, _ := question("www.example.test.", mdns.TypeA).Pack()
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inLearn:
	case <-time.After(10 * time.Second):
		t.Fatal("Learn was never called")
	}
	// Loopback delivers a datagram into the socket during the send: a
	// reply written before Learn would be readable now.
	buf := make([]byte, 65535)
	if n := pending(t, c.(*net.UDPConn)); n > 0 {
		t.Fatalf("a %d-byte reply arrived while Learn was still writing the grants", n)
	}
	close(release)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply after Learn returned: %v", err)
	}
	r := new(mdns.Msg)
	if err := r.Unpack(buf[:n]); err != nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("reply %v (%v); want the answer", r, err)
	}
}

// pending peeks, without waiting, at the datagram queued on c: its size, or
// 0 when none is. (A read deadline in the past would not look at the queue
// at all.)
func pending(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var rerr error
	buf := make([]byte, 65535)
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT|unix.MSG_PEEK)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if errors.Is(rerr, unix.EAGAIN) {
		return 0
	}
	if rerr != nil {
		t.Fatalf("peek: %v", rerr)
	}
	return n
}

// TestUnknownSenderOverSockets: a sender the gateway does not identify
// gets REFUSED over UDP and TCP, and nothing is forwarded.
func TestUnknownSenderOverSockets(t *testing.T) {
	fx := newFixture(t, nil)
	udp, tcp := fx.serve(t)
	for _, netw := range []string{"udp", "tcp"} {
		var local net.Addr = &net.UDPAddr{IP: strangerIP.AsSlice()}
		if netw == "tcp" {
			local = &net.TCPAddr{IP: strangerIP.AsSlice()}
		}
		addr := map[string]string{"udp": udp, "tcp": tcp}[netw]
		c := &mdns.Client{Net: netw, Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}}
		r, _, err := c.Exchange(question("www.example.test.", mdns.TypeA), addr)
		if err != nil {
			t.Fatalf("%s: %v", netw, err)
		}
		if r.Rcode != mdns.RcodeRefused || len(r.Answer)+len(r.Ns) != 0 {
			t.Errorf("%s: reply %v; want REFUSED, question only", netw, r)
		}
	}
	if n := fx.up.count("www.example.test."); n != 0 {
		t.Errorf("forwarded %d times for an unknown sender", n)
	}
	// Positive control: the known sender is answered on the same sockets.
	if r := exchange(t, "udp", udp, question("www.example.test.", mdns.TypeA)); r.Rcode != mdns.RcodeSuccess {
		t.Errorf("known sender: %v", r)
	}
}

// TestExtraRestricted: Options.Restricted (the host's own addresses, the
// Outcall subnets) is applied besides netrange's ranges.
func TestExtraRestricted(t *testing.T) {
	host := netip.MustParseAddr("198.51.100.10") // www's address plays the host's
	fx := newFixture(t, func(o *Options) { o.Restricted = func(a netip.Addr) bool { return a == host } })
	if r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("reply %v; want SERVFAIL (only a restricted address)", r)
	}
	if r := fx.ask(t, agentIP, question("multi.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 3 {
		t.Fatalf("reply %v; want the unrestricted answer whole", r)
	}
}
