package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The lab's names. Every address is the upstream namespace's (TESTING.md),
// and so inside a restricted range (documentation addresses): the rules
// that allow them say allow_private_ips, and a rule without it shows the
// rebinding filter.
const nameRules = `version: "1"
rules:
  - id: direct-allowed
    condition: 'dns.query == "direct.test"'
    action: allow
    egress:
      mode: direct_ip
      ports: [80]
      allow_private_ips: true
  - id: direct-short
    condition: 'dns.query == "short.test"'
    action: allow
    egress:
      mode: direct_ip
      ports: [443]
      allow_private_ips: true
  - id: names-race
    condition: 'dns.query.endsWith(".race.test")'
    action: allow
    egress:
      mode: direct_ip
      ports: [8081]
      allow_private_ips: true
  - id: rebind
    condition: 'dns.query == "rebind.test"'
    action: allow
  - id: block-evil
    condition: 'dns.query.endsWith("evil.test")'
    action: block
`

// namesWorld is a daemon with the DNS filter on, forwarding to an
// authoritative server in the upstream namespace, and two agents.
type namesWorld struct {
	*world
	upstreamDNS *DNSServer
}

func setUpNames(t *testing.T, daemonArgs ...string) *namesWorld {
	t.Helper()
	w := setUpWithRules(t, map[string]string{"10-names.yaml": nameRules}, daemonArgs...)
	zone := Zone{
		"direct.test.":  {RR(t, "direct.test. 60 IN A "+Upstream)},
		"short.test.":   {RR(t, "short.test. 2 IN A "+Upstream2)},
		"rebind.test.":  {RR(t, "rebind.test. 60 IN A 10.9.9.9")},
		"evil.test.":    {RR(t, "evil.test. 60 IN A "+Upstream2)},
		"cname.test.":   {RR(t, "cname.test. 60 IN CNAME direct.test.")},
		"nothing.test.": {},
	}
	srv := ServeDNSZone(t, w.lab.Up, netip.MustParseAddrPort(Upstream+":53"), zone)
	// Positive control: the upstream resolver answers the host namespace.
	if r := Resolve(w.lab.Host, "udp", Upstream+":53", "direct.test", dns.TypeA); r == nil || len(answerAddrs(r)) != 1 {
		t.Fatalf("the upstream resolver does not answer the host namespace: %v", r)
	}
	return &namesWorld{world: w, upstreamDNS: srv}
}

// TestLabDNSFilter: allowed names resolve through the gateway, blocked
// ones get NXDOMAIN with the SOA, a rebinding answer is refused, and DNS
// to anywhere but the own gateway is dropped and counted.
func TestLabDNSFilter(t *testing.T) {
	w := setUpNames(t)
	a1, d := w.a1, w.d
	gw := Gateway + ":53"
	for _, network := range []string{"udp", "tcp"} {
		r := Resolve(a1.NS, network, gw, "DIRECT.test.", dns.TypeA)
		if r == nil || r.Rcode != dns.RcodeSuccess || strings.Join(answerAddrs(r), ",") != Upstream {
			t.Fatalf("%s: allowed name through the gateway: %v", network, r)
		}
		if r.Question[0].Name != "DIRECT.test." {
			t.Errorf("%s: question not echoed as asked: %q", network, r.Question[0].Name)
		}
	}
	if r := Resolve(a1.NS, "udp", gw, "www.evil.test", dns.TypeA); r == nil || r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || len(r.Answer) != 0 {
		t.Fatalf("blocked name: %v", r)
	}
	if r := Resolve(a1.NS, "udp", gw, "unlisted.test", dns.TypeA); r == nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("a name no rule allows: %v", r)
	}
	blockedBefore := dnsBlocked(t, d)
	if r := Resolve(a1.NS, "udp", gw, "rebind.test", dns.TypeA); r == nil || r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("a rebinding answer (private address, no allow_private_ips): %v", r)
	}
	if n := dnsBlocked(t, d); n != blockedBefore+1 {
		t.Errorf("the rebinding answer was not counted as blocked: %d, then %d", blockedBefore, n)
	}
	if r := Resolve(a1.NS, "udp", gw, "cname.test", dns.TypeA); r == nil {
		t.Fatal("a CNAME to an allowed name got no answer")
	}

	// Bypass: the upstream resolver itself, over UDP, TCP and 853, from
	// the agent. Positive control: it answers the host namespace (above,
	// and for TCP here).
	if r := Resolve(w.lab.Host, "tcp", Upstream+":53", "direct.test", dns.TypeA); r == nil {
		t.Fatal("positive control: the upstream resolver does not answer TCP from the host namespace")
	}
	ServeTCP(t, w.lab.Up, Upstream+":853")
	mustReach(t, TCP, w.lab.Host, Upstream+":853")
	before := counters(t, d)
	if r := Resolve(a1.NS, "udp", Upstream+":53", "direct.test", dns.TypeA); r != nil {
		t.Error("the agent reached the upstream resolver over UDP")
	}
	if r := Resolve(a1.NS, "tcp", Upstream+":53", "direct.test", dns.TypeA); r != nil {
		t.Error("the agent reached the upstream resolver over TCP")
	}
	if TCP(a1.NS, Upstream+":853") {
		t.Error("the agent reached DNS over TLS on another address")
	}
	if moved := counters(t, d)["drop/dns_bypass"] - before["drop/dns_bypass"]; moved < 3 {
		t.Errorf("drop/dns_bypass moved by %d, want at least 3", moved)
	}

	status := mustCLI(t, d, "dns", "status")
	if !strings.Contains(status, "DNS Filter:     active") || !strings.Contains(status, "Upstreams:      "+Upstream+":53") {
		t.Errorf("dns status:\n%s", status)
	}
}

// TestLabDirectIP: a direct_ip answer opens exactly its address, on the
// rule's ports, for the agent that asked, until its TTL ends.
func TestLabDirectIP(t *testing.T) {
	w := setUpNames(t)
	a1, a2, d := w.a1, w.a2, w.d
	mustReach(t, TCP, w.lab.Host, Upstream+":80", Upstream+":443", Upstream2+":443", Upstream2+":80")
	if TCP(a1.NS, Upstream+":80") {
		t.Fatal("the agent reached the address before resolving its name")
	}
	if r := Resolve(a1.NS, "udp", Gateway+":53", "direct.test", dns.TypeA); r == nil || len(answerAddrs(r)) != 1 {
		t.Fatalf("resolve: %v", r)
	}
	mustReach(t, TCP, a1.NS, Upstream+":80")
	if TCP(a1.NS, Upstream+":443") {
		t.Error("the grant opened a port the rule does not list")
	}
	if TCP(a1.NS, Upstream2+":80") {
		t.Error("the grant opened another address")
	}
	if TCP(a2.NS, Upstream+":80") {
		t.Error("a1's answer opened the address for a2")
	}
	list := mustCLI(t, d, "grant", "list")
	if !strings.Contains(list, "dns (direct-allowed)") {
		t.Errorf("grant list does not show the learned grant:\n%s", list)
	}

	// A 2 s TTL: open right after the answer, closed once it has passed.
	if r := Resolve(a1.NS, "udp", Gateway+":53", "short.test", dns.TypeA); r == nil || len(answerAddrs(r)) != 1 {
		t.Fatalf("resolve short.test: %v", r)
	}
	mustReach(t, TCP, a1.NS, Upstream2+":443")
	time.Sleep(3 * time.Second)
	if TCP(a1.NS, Upstream2+":443") {
		t.Error("the grant outlived its TTL")
	}
}

// TestLabResolveThenConnect: 10,000 times a fresh name, resolved and
// connected to at once; the first connection never fails (the grant is in
// the datapath before the answer is released).
func TestLabResolveThenConnect(t *testing.T) {
	// 10,000 connections in a few seconds would meet the per-agent
	// connection cap (the queries no longer count towards it:
	// TestLabDNSQueriesOutsideConnCap); it is not what is measured.
	w := setUpNames(t, "--max-conns-per-agent", "0")
	a1 := w.a1
	// Every address of 198.18.0.0/18 is local in the upstream namespace,
	// answered by one listener on the wildcard address.
	w.lab.InNS(w.lab.Up, "ip", "route", "add", "local", "198.18.0.0/18", "dev", "lo")
	ServeTCP(t, w.lab.Up, "0.0.0.0:8081")
	const n = 10000
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		w.upstreamDNS.Set(ip.String()+".race.test", RR(t, ip.String()+".race.test. 300 IN A "+ip.String()))
	}
	mustReach(t, TCP, w.lab.Host, "198.18.0.1:8081")
	failures := 0
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		name := ip.String() + ".race.test"
		r := Resolve(a1.NS, "udp", Gateway+":53", name, dns.TypeA)
		if r == nil || len(answerAddrs(r)) != 1 {
			t.Fatalf("iteration %d: resolve %s: no answer (%v)", i, name, r != nil)
		}
		if !TCP(a1.NS, ip.String()+":8081") {
			// A failed probe waits out its timeout: stop early.
			if failures++; failures == 10 {
				t.Fatalf("10 of the first %d connections right after their answer failed", i+1)
			}
		}
	}
	if failures != 0 {
		t.Fatalf("%d of %d first connections right after the answer failed", failures, n)
	}
}

// dnsBlocked reads the DNS filter's blocked count from `outcall dns status`.
func dnsBlocked(t *testing.T, d *Daemon) int {
	t.Helper()
	out := mustCLI(t, d, "dns", "status")
	var total, allowed, blocked int
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Queries:") {
			if _, err := fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "Queries:")), "%d total (%d allowed, %d blocked)", &total, &allowed, &blocked); err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return blocked
		}
	}
	t.Fatalf("dns status has no Queries line:\n%s", out)
	return 0
}
