package dockerlab

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// machineLockName is a machine-wide lock's name: lowercase words, never a
// session prefix (which the sweeps would take for a session).
var machineLockName = regexp.MustCompile(`^[a-z][a-z-]{2,30}$`)

// LockMachine takes the machine-wide lock name (a file name.lock beside
// the sessions' locks), waiting at most wait for whoever holds it, for a
// resource of which a machine has one, such as the root namespace's
// nftables tables of an outcalld. Close the file to release it; the lock
// goes with the process too.
func LockMachine(name string, wait time.Duration) (*os.File, error) {
	if !machineLockName.MatchString(name) || prefixPattern.MatchString(name) || name == "routes" {
		return nil, fmt.Errorf("machine lock %q: want a lowercase name that is no session prefix and not routes", name)
	}
	return lockFile(name, wait)
}

// Alive reports whether a process holds the session lock of prefix: the
// objects named after a dead one are a crashed run's leftovers.
func Alive(prefix string) bool { return prefixPattern.MatchString(prefix) && alive(prefix) }

// IsPrefix reports whether s is a session prefix ("oct" and six hex
// digits).
func IsPrefix(s string) bool { return prefixPattern.MatchString(s) }

// RouteAddress routes the single address a, outside the test prefixes
// (such as the metadata address 169.254.169.254), from the root namespace
// into the upstream namespace and makes it an address there, so that a
// probe of it lands in the upstream namespace like any other target. The
// host must route no part of a itself (a link-local address the host uses
// is refused), and Check must accept it afterwards; the route goes with
// the link.
func (u *Upstream) RouteAddress(t testing.TB, a netip.Addr) {
	t.Helper()
	if !a.Is4() || a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || linkNet.Contains(a) {
		t.Fatalf("RouteAddress %s: not a unicast IPv4 address of its own", a)
	}
	p := netip.PrefixFrom(a, 32)
	used, err := hostPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	if overlapsAny(p, used) {
		t.Fatalf("RouteAddress %s: the host routes it itself", a)
	}
	if !u.routed(a) {
		u.Lab.Run("ip", "route", "add", p.String(), "via", LinkUp.String(), "dev", u.Link)
		u.Routed = append(u.Routed, p)
		t.Cleanup(func() {
			_ = exec.Command("ip", "route", "del", p.String(), "via", LinkUp.String(), "dev", u.Link).Run()
		})
	}
	if u.Check(a) != nil {
		u.AddAddress(t, a)
	}
	u.RequireRoutes(t, a)
}

// LiveSessions lists the prefixes of the sessions whose lock a process
// holds (this one's included): who else uses Docker on this machine now.
func LiveSessions() []string {
	var live []string
	entries, _ := os.ReadDir(lockDir)
	for _, e := range entries {
		if p, ok := strings.CutSuffix(e.Name(), ".lock"); ok && prefixPattern.MatchString(p) && alive(p) {
			live = append(live, p)
		}
	}
	return live
}

// OwnsImages reports whether prefix is the owner of this test binary's
// imported images (a session of this process, see Image).
func OwnsImages(prefix string) bool {
	images.mu.Lock()
	defer images.mu.Unlock()
	return images.owner != "" && images.owner == prefix
}
