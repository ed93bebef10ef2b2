package lab

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestLabUnknownPortWhileDown (defect 5): a port plugged into the bridge
// while outcalld is killed cannot ARP-poison the host's entry for an agent
// and cannot deliver a frame to an agent's port, and after the restart the
// agent's traffic still goes to the agent. Positive control: the same probes
// from the same namespace work on a plain bridge of the same host.
func TestLabUnknownPortWhileDown(t *testing.T) {
	w := setUp(t)
	l, a2 := w.lab, w.a2
	// rogue and victim on a plain bridge with an address of the host's, so
	// the host has a neighbour cache there to poison.
	rogue, victim := plainPair(t, l)
	plain := l.Prefix + "pb"
	l.InNS(l.Host, "ip", "addr", "add", "10.201.0.1/24", "dev", plain)
	// Without locktime an unsolicited ARP reply overrides an entry at once,
	// so a poisoning that nothing stops works on the first try.
	for _, br := range []string{plain, l.Bridge} {
		l.InNS(l.Host, "sysctl", "-qw", "net.ipv4.neigh."+br+".locktime=0")
	}
	rogueMAC := mustParseMAC(t, rogue.MAC)
	// With br_netfilter on, bridged IPv4 also meets the inet table; off, only
	// the bridge table stands between ports, which is the case to show.
	if _, err := execIn(l.Host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"); err != nil {
		t.Log("br_netfilter not loaded; bridged frames meet only the bridge table anyway")
	}

	// poison makes the host believe ip is at the rogue's MAC, by an
	// unsolicited ARP reply to the host's MAC on bridge br. It reports the
	// host's MAC for ip a second later.
	poison := func(br, ip, mac string) string {
		t.Helper()
		l.InNS(l.Host, "ip", "neigh", "replace", ip, "lladdr", mac, "dev", br, "nud", "stale")
		time.Sleep(100 * time.Millisecond) // the override needs a jiffy since the update
		hostMAC := linkMAC(t, l, br)
		if err := SendFrame(rogue.NS, "eth0", arpFrame(2, hostMAC, rogueMAC, net.ParseIP(ip), hostMAC, net.ParseIP(gatewayOf(br, l)))); err != nil {
			t.Fatal(err)
		}
		var got string
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got = hostNeigh(t, l, br, ip); got == rogue.MAC {
				break
			}
		}
		return got
	}
	// deliver sends n UDP frames from the rogue to dst's MAC and address
	// and counts how many reach dst's interface.
	seq := 0
	deliver := func(dst Agent, n int) int {
		t.Helper()
		seq++
		marker := []byte(fmt.Sprintf("oc-rogue-%d", seq))
		c, err := CatchFrames(dst.NS, "eth0", marker)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		frame := udpPayloadFrame(rogueMAC, mustParseMAC(t, dst.MAC), net.ParseIP(rogue.IP), net.ParseIP(dst.IP), 40000, 7001, marker)
		for range n {
			if err := SendFrame(rogue.NS, "eth0", frame); err != nil {
				t.Fatal(err)
			}
		}
		return c.Count(time.Second)
	}

	// Positive control: on a plain bridge both probes work.
	if got := poison(plain, victim.IP, victim.MAC); got != rogue.MAC {
		t.Fatalf("control: ARP poisoning on a plain bridge did not work (host has %q); the probe is broken", got)
	}
	if got := deliver(victim, 5); got == 0 {
		t.Fatal("control: no frame from the rogue reached the victim on a plain bridge; the probe is broken")
	}

	// The daemon dies; the rogue moves to the Outcall bridge, where nothing
	// has taken it over.
	if err := w.d.Signal(syscall.SIGKILL); err == nil {
		t.Log("outcalld exited cleanly on SIGKILL?")
	}
	l.InNS(l.Host, "ip", "link", "set", rogue.Port, "nomaster")
	l.InNS(l.Host, "ip", "link", "set", rogue.Port, "master", l.Bridge)

	if got := poison(l.Bridge, a2.IP, a2.MAC); got != a2.MAC {
		t.Errorf("daemon down: an unknown port poisoned the host's entry for a2: %q, want %q", got, a2.MAC)
	}
	if got := deliver(a2, 5); got != 0 {
		t.Errorf("daemon down: frames from an unknown port reached a2 (%d seen, 5 sent)", got)
	}
	// Both were stopped by the floor the dead daemon left, and counted.
	for _, c := range []struct{ family, name string }{{"arp", "arp_input_drop"}, {"bridge", "bridge_forward_to_port"}} {
		if n := floorCounter(t, l, c.family, c.name); n == 0 {
			t.Errorf("%s %s did not count the unknown port's frames", c.family, c.name)
		}
	}

	// After the restart the rogue is taken over (a port without endpoint),
	// a2's entry still points at a2, and a2's traffic comes back to a2.
	d := l.StartDaemon(filepath.Join(bins, "outcalld"))
	if got := hostNeigh(t, l, l.Bridge, a2.IP); got != "" && got != a2.MAC {
		t.Errorf("after restart the host's entry for a2 is %q, want %q", got, a2.MAC)
	}
	if got := poison(l.Bridge, a2.IP, a2.MAC); got != a2.MAC {
		t.Errorf("after restart the rogue poisoned the host's entry for a2: %q", got)
	}
	if got := deliver(a2, 5); got != 0 {
		t.Errorf("after restart frames from the rogue reached a2 (%d seen, 5 sent)", got)
	}
	mustCLI(t, d, "grant", "add", "--endpoint", "a2", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	if !TCP(a2.NS, Upstream+":80") {
		t.Errorf("after restart a2's granted flow does not come back to a2\n%s", d.Log)
	}
}

// arpFrame is an Ethernet ARP frame with every field chosen by the caller.
func arpFrame(op uint16, dst, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP) []byte {
	b := make([]byte, 0, 42)
	b = append(b, dst...)
	b = append(b, sha...)
	b = binary.BigEndian.AppendUint16(b, 0x0806)
	b = append(b, 0, 1, 0x08, 0x00, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	b = append(b, spa.To4()...)
	b = append(b, tha...)
	return append(b, tpa.To4()...)
}

// gatewayOf is the host's address on bridge br of the lab.
func gatewayOf(br string, l *Lab) string {
	if br == l.Bridge {
		return Gateway
	}
	return "10.201.0.1"
}

func mustParseMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// linkMAC is the MAC of dev in the lab's host namespace.
func linkMAC(t *testing.T, l *Lab, dev string) net.HardwareAddr {
	t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	out := l.InNS(l.Host, "ip", "-j", "link", "show", "dev", dev)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("parse ip link: %v\n%s", err, out)
	}
	return mustParseMAC(t, links[0].Address)
}

// hostNeigh is the host's MAC for ip on dev, "" without an entry.
func hostNeigh(t *testing.T, l *Lab, dev, ip string) string {
	t.Helper()
	var entries []struct {
		Lladdr string `json:"lladdr"`
	}
	out := l.InNS(l.Host, "ip", "-j", "neigh", "show", ip, "dev", dev)
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("parse ip neigh: %v\n%s", err, out)
	}
	if len(entries) != 1 {
		return ""
	}
	return entries[0].Lladdr
}

// floorCounter is the packet count of the floor's rule commented name in
// table family outcall of the host namespace.
func floorCounter(t *testing.T, l *Lab, family, name string) uint64 {
	t.Helper()
	out := l.InNS(l.Host, "nft", "list", "table", family, "outcall")
	m := regexp.MustCompile(`counter packets (\d+) bytes \d+ \w+ comment "` + regexp.QuoteMeta(name) + `"`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rule %q in table %s outcall:\n%s", name, family, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}
