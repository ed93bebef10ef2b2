package lab

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestLabGrantDestinations: operator grants against a real outcalld (S009).
// A CIDR grant opens the addresses inside it for that endpoint and on that
// port only, is listed as given and closes on revoke; a TTL grant closes
// on time (new connections) after at least one sweep; a host name grant,
// resolved through the lab's own upstream DNS, opens its address and is
// listed under the name. Every probe aims at a responder in the upstream
// namespace, so a probe that gets no answer was dropped.
func TestLabGrantDestinations(t *testing.T) {
	w := setUp(t)
	l, a1, a2, d := w.lab, w.a1, w.a2, w.d
	const (
		in1, in2 = "198.51.100.65", "198.51.100.126" // inside 198.51.100.64/26
		out      = "198.51.100.130"                  // just outside it
	)
	for _, a := range []string{in1, in2, out} {
		l.InNS(l.Up, "ip", "addr", "add", a+"/32", "dev", "lo")
		ServeTCP(t, l.Up, a+":80")
		ServeTCP(t, l.Up, a+":81")
	}
	// Positive control of the responders, from the upstream namespace's
	// own side of the lab: the host namespace reaches all of them.
	for _, a := range []string{in1, in2, out} {
		if !TCP(l.Host, a+":80") || !TCP(l.Host, a+":81") {
			t.Fatalf("responders on %s do not answer the host namespace", a)
		}
	}
	// Before any grant, nothing passes.
	for _, a := range []string{in1 + ":80", out + ":80"} {
		if TCP(a1.NS, a) {
			t.Fatalf("a1 reached %s without a grant", a)
		}
	}

	t.Run("cidr", func(t *testing.T) {
		mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", "198.51.100.64/26", "--proto", "tcp", "--port", "80")
		for _, a := range []string{in1, in2} {
			if !TCP(a1.NS, a+":80") {
				t.Errorf("a1 cannot reach %s:80 inside its CIDR grant\n%s", a, d.Log)
			}
		}
		for _, probe := range []struct{ ns, addr, why string }{
			{a1.NS, in1 + ":81", "another port"},
			{a1.NS, out + ":80", "outside the prefix"},
			{a2.NS, in1 + ":80", "another endpoint"},
		} {
			if TCP(probe.ns, probe.addr) {
				t.Errorf("%s reached %s (%s)", probe.ns, probe.addr, probe.why)
			}
		}
		if list := mustCLI(t, d, "grant", "list"); !strings.Contains(list, "198.51.100.64/26") {
			t.Errorf("grant list does not show the CIDR as given:\n%s", list)
		}
		mustCLI(t, d, "grant", "remove", "--endpoint", "a1", "--dst", "198.51.100.64/26", "--proto", "tcp", "--port", "80")
		if TCP(a1.NS, in1+":80") {
			t.Error("a1 still reaches the CIDR after grant remove")
		}
		if _, errOut, code := cli(t, d, "grant", "add", "--endpoint", "a1", "--dst", "198.51.100.65/26"); code == 0 || !strings.Contains(errOut, "198.51.100.64/26") {
			t.Errorf("non-canonical CIDR: exit %d, %q", code, errOut)
		}
		if _, errOut, code := cli(t, d, "grant", "add", "--endpoint", "a1", "--dst", "10.200.0.0/24", "--allow-private"); code == 0 || !strings.Contains(errOut, "Outcall subnet") {
			t.Errorf("a CIDR of the agents' subnet: exit %d, %q", code, errOut)
		}
	})

	t.Run("ttl", func(t *testing.T) {
		mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", in2, "--proto", "tcp", "--port", "81", "--ttl", "1")
		if !TCP(a1.NS, in2+":81") {
			t.Fatalf("a1 cannot reach %s:81 with a 1 s grant\n%s", in2, d.Log)
		}
		time.Sleep(1200 * time.Millisecond) // expired in the datapath
		if TCP(a1.NS, in2+":81") {
			t.Error("a new connection passed after the grant's TTL")
		}
		deadline := time.Now().Add(3 * time.Second) // at least one 1 s sweep
		for strings.Contains(mustCLI(t, d, "grant", "list"), in2) {
			if time.Now().After(deadline) {
				t.Fatal("the expired grant is still listed after the sweeps")
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("hostname", func(t *testing.T) {
		ServeDNSZone(t, l.Up, netip.MustParseAddrPort(Upstream+":53"), Zone{
			"grant.test.": {RR(t, "grant.test. 60 IN A "+out)},
		})
		_, errOut, code := cli(t, d, "grant", "add", "--endpoint", "a1", "--dst", "grant.test", "--proto", "tcp", "--port", "80")
		if code != 0 && strings.Contains(errOut, "no resolver") {
			t.Skip("this outcalld has no resolver for host name grants: network.Controller.SetResolver is not wired to the DNS filter yet")
		}
		if code != 0 {
			t.Fatalf("grant add grant.test: exit %d, %s\n%s", code, errOut, d.Log)
		}
		if !TCP(a1.NS, out+":80") {
			t.Errorf("a1 cannot reach grant.test's address %s:80\n%s", out, d.Log)
		}
		if TCP(a1.NS, out+":81") || TCP(a2.NS, out+":80") {
			t.Error("the host name grant opened another port or another endpoint")
		}
		if list := mustCLI(t, d, "grant", "list"); !strings.Contains(list, "grant.test") {
			t.Errorf("grant list does not show the host name:\n%s", list)
		}
		mustCLI(t, d, "grant", "remove", "--endpoint", "a1", "--dst", "grant.test", "--proto", "tcp", "--port", "80")
		if TCP(a1.NS, out+":80") {
			t.Error("a1 still reaches grant.test's address after grant remove")
		}
	})
}
