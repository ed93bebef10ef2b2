package dns

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rules"
)

// rawOnly is a gateway socket the way the network controller hands it out:
// the PacketConn methods and SyscallConn, nothing of *net.UDPConn besides.
type rawOnly struct {
	net.PacketConn
	raw syscall.Conn
}

func (c rawOnly) SyscallConn() (syscall.RawConn, error) { return c.raw.SyscallConn() }

// noRawConn hides a socket's raw access.
type noRawConn struct{ net.PacketConn }

// TestNewBatchConn: batching is on for a socket with raw access, the
// network controller's wrapper included, and off without it.
func TestNewBatchConn(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, ok := newBatchConn(pc); !ok {
		t.Error("no batching on a *net.UDPConn")
	}
	if _, ok := newBatchConn(rawOnly{pc, pc.(syscall.Conn)}); !ok {
		t.Error("no batching on a wrapper with SyscallConn")
	}
	if _, ok := newBatchConn(noRawConn{pc}); ok {
		t.Error("batching on a socket without raw access")
	}
}

// rawGateway is fakeGateway with its UDP socket wrapped by wrap.
type rawGateway struct {
	*fakeGateway
	wrap func(net.PacketConn) net.PacketConn
}

func (g rawGateway) ListenUDP(ctx context.Context, port uint16) (net.PacketConn, error) {
	pc, err := g.fakeGateway.ListenUDP(ctx, port)
	if err != nil {
		return nil, err
	}
	return g.wrap(pc), nil
}

// TestServeUDPBurst: queries that arrive together, from several clients,
// are each answered once under their own ID, whatever else shares their
// batch: a cache hit, a block, an upstream NXDOMAIN (never cached, so
// each goes upstream), a refusal of an unknown
// sender, garbage (which gets nothing). Both loops, batched and not.
func TestServeUDPBurst(t *testing.T) {
	for name, wrap := range map[string]func(net.PacketConn) net.PacketConn{
		"batched":      func(pc net.PacketConn) net.PacketConn { return rawOnly{pc, pc.(syscall.Conn)} },
		"one by one":   func(pc net.PacketConn) net.PacketConn { return noRawConn{pc} },
		"*net.UDPConn": func(pc net.PacketConn) net.PacketConn { return pc },
	} {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t, nil)
			fx.rules.set(func(c *api.EvaluationContext) rules.Outcome {
				if c.DNS.Query == "bad.example.test" {
					return block("no-bad")
				}
				return allow("allow-all", nil)
			})
			gw := rawGateway{fx.gw, wrap}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- fx.f.Serve(ctx, gw) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}()
			udp, _ := fx.gw.addrs()
			exchange(t, "udp", udp, question("www.example.test.", mdns.TypeA)) // cached now

			type want struct {
				rcode   int
				answers int
			}
			wants := map[string]want{
				"www.example.test.": {mdns.RcodeSuccess, 1},
				"bad.example.test.": {mdns.RcodeNameError, 0},
				"nx.example.test.":  {mdns.RcodeNameError, 0}, // never cached: upstream each time
			}
			const clients, perClient = 4, 200
			var wg sync.WaitGroup
			for c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := net.Dial("udp", udp)
					if err != nil {
						t.Error(err)
						return
					}
					defer conn.Close()
					// At most window queries in flight per client, as the
					// lab's closed loop, so that no burst overflows the
					// socket's receive buffer.
					const window = 16
					sent := map[uint16]string{}
					next := 0
					send := func() bool {
						i := next
						next++
						if i%10 == 3 {
							_, _ = conn.Write([]byte("\x00\x01not dns")) // nothing back
						}
						name := "www.example.test."
						switch i % 6 {
						case 1:
							name = "bad.example.test."
						case 4:
							name = "nx.example.test."
						}
						q := question(name, mdns.TypeA)
						q.Id = uint16(c*1000 + i)
						raw, _ := q.Pack()
						if _, err := conn.Write(raw); err != nil {
							t.Error(err)
							return false
						}
						sent[q.Id] = name
						return true
					}
					for next < window {
						if !send() {
							return
						}
					}
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					buf := make([]byte, 65535)
					for len(sent) > 0 {
						n, err := conn.Read(buf)
						if err != nil {
							t.Errorf("client %d: %d queries unanswered: %v", c, len(sent), err)
							return
						}
						r := new(mdns.Msg)
						if err := r.Unpack(buf[:n]); err != nil {
							t.Errorf("client %d: reply does not unpack: %v", c, err)
							return
						}
						name, ok := sent[r.Id]
						if !ok {
							t.Errorf("client %d: reply with ID %d, which is not an open query's (answered twice?)", c, r.Id)
							return
						}
						delete(sent, r.Id)
						w := wants[name]
						if r.Rcode != w.rcode || len(r.Answer) != w.answers || len(r.Question) != 1 || r.Question[0].Name != name {
							t.Errorf("client %d: %s got rcode %d with %d answers for %v; want %d with %d", c, name, r.Rcode, len(r.Answer), r.Question, w.rcode, w.answers)
						}
						if next < perClient && !send() {
							return
						}
					}
					// Nothing more comes: the garbage got no reply.
					_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					if n, err := conn.Read(buf); err == nil {
						t.Errorf("client %d: an extra %d-byte reply", c, n)
					}
				}()
			}
			// An unknown sender in the same bursts is REFUSED.
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IP(strangerIP.AsSlice())}, net.UDPAddrFromAddrPort(mustAddrPort(t, udp)))
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				for i := range 20 {
					q := question("www.example.test.", mdns.TypeA)
					q.Id = uint16(9000 + i)
					raw, _ := q.Pack()
					_, _ = conn.Write(raw)
				}
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 65535)
				for range 20 {
					n, err := conn.Read(buf)
					if err != nil {
						t.Errorf("unknown sender: %v", err)
						return
					}
					r := new(mdns.Msg)
					if err := r.Unpack(buf[:n]); err != nil || r.Rcode != mdns.RcodeRefused || len(r.Answer) != 0 {
						t.Errorf("unknown sender got %v (%v); want REFUSED", r, err)
					}
				}
			}()
			wg.Wait()
		})
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// TestRealClockHit: with the default clock a hit reads it once, for the
// cache and the hold time; the answer is still a hit with the TTL left.
func TestRealClockHit(t *testing.T) {
	fx := newFixture(t, func(o *Options) { o.Now = nil })
	if !fx.f.realClock {
		t.Fatal("the default clock is not known as time.Now")
	}
	first := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	second := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	if first == nil || second == nil || len(first.Answer) != 1 || len(second.Answer) != 1 {
		t.Fatalf("replies %v, %v; want the A record twice", first, second)
	}
	if st := fx.f.CacheStats(); st.Hits != 1 || st.Misses != 1 {
		t.Errorf("cache stats %+v; want one miss, then one hit", st)
	}
	if got, was := second.Answer[0].Header().Ttl, first.Answer[0].Header().Ttl; got == 0 || got > was {
		t.Errorf("hit's TTL %d; want the %d of the miss or a little less", got, was)
	}
}
