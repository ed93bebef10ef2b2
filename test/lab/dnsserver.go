package lab

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is an authoritative test zone: answers by lowercased name (with the
// trailing dot) and record type. A name with no records of a type is
// NODATA; an unknown name is NXDOMAIN.
type Zone map[string][]dns.RR

// RR parses a record in zone-file syntax ("allowed.test. 30 IN A
// 198.51.100.10") and fails the test on a typo.
func RR(t testing.TB, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatalf("record %q: %v", s, err)
	}
	return rr
}

// DNSServer is an authoritative server in a namespace of the lab: the
// upstream resolver the daemon forwards to. It counts the queries it
// answers, so a test can tell a cached answer from a forwarded one.
type DNSServer struct {
	mu      sync.Mutex
	zone    Zone
	queries int
}

// Queries is how many queries the server has answered.
func (s *DNSServer) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Set replaces the records of name (all types).
func (s *DNSServer) Set(name string, rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zone[dns.Fqdn(strings.ToLower(name))] = rrs
}

func (s *DNSServer) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	s.mu.Lock()
	s.queries++
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) == 1 {
		qq := q.Question[0]
		rrs, ok := s.zone[strings.ToLower(qq.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == qq.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
	}
	s.mu.Unlock()
	_ = w.WriteMsg(m)
}

// ServeDNSZone starts an authoritative server for zone on addr (UDP and
// TCP) inside namespace ns until the test ends.
func ServeDNSZone(t testing.TB, ns string, addr netip.AddrPort, zone Zone) *DNSServer {
	t.Helper()
	s := &DNSServer{zone: Zone{}}
	for name, rrs := range zone {
		s.Set(name, rrs...)
	}
	var pc net.PacketConn
	var l net.Listener
	err := Do(ns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", addr.String()); err != nil {
			return err
		}
		l, err = net.Listen("tcp4", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("DNS server on %s in %s: %v", addr, ns, err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: l, Handler: s}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
	})
	return s
}

// Resolve sends one query for name and type from namespace ns to server
// ("udp" or "tcp") and returns the reply, or nil when none came in time.
func Resolve(ns, network, server, name string, qtype uint16) *dns.Msg {
	var reply *dns.Msg
	_ = Do(ns, func() error {
		c := &dns.Client{Net: network, Timeout: probeTimeout}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		r, _, err := c.Exchange(m, server)
		if err == nil {
			reply = r
		}
		return nil
	})
	return reply
}

// answerAddrs lists the A records of a reply.
func answerAddrs(m *dns.Msg) []string {
	var out []string
	if m == nil {
		return nil
	}
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// proxyHealth asks the proxy at addr for GET /outcall-health from
// namespace ns and returns the status and body; 0 and "" when nothing
// answered.
func proxyHealth(ns, addr string) (code int, body string) {
	_ = Do(ns, func() error {
		c, err := net.DialTimeout("tcp4", addr, probeTimeout)
		if err != nil {
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeTimeout))
		if _, err := c.Write([]byte("GET /outcall-health HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n")); err != nil {
			return nil
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		code, body = resp.StatusCode, strings.TrimSpace(string(b))
		return nil
	})
	return code, body
}
