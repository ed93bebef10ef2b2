package dockerlab

import (
	"net/netip"
	"os"
	"os/exec"
	"testing"
)

// A crashed run's objects go; a live session's stay, also one of another
// test binary (its lock is held, as this process's are).
func TestSweep(t *testing.T) {
	d := RequireDocker(t)
	live := NewSession(t)
	liveNet := live.Network(t, "live", netip.Prefix{})

	// A session whose process died: its lock file exists, nobody holds it.
	dead := newPrefix()
	f, err := register(dead)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // in case the sweep under test fails
		_ = d.RemovePrefixed(t.Context(), dead)
		_ = removeNetns(dead)
		_ = os.Remove(lockPath(dead))
	})
	ghost := &Session{Prefix: dead, Docker: d, t: t, DNS: netip.MustParseAddr("198.51.100.10")}
	n := ghost.Network(t, "ghost", netip.Prefix{})
	c := ghost.Start(t, "ghost", RunOptions{Cmd: []string{"sleep", "60"}})
	// An image of the dead session (a second tag of this binary's).
	liveImage := Image(t)
	ghostImage := ImageRepository + ":ghost-" + dead
	d.Must(t, "tag", liveImage, ghostImage)
	if out, err := exec.Command("ip", "netns", "add", dead+"-up").CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	f.Close() // the "crash": the lock is gone, the file stays

	if err := sweep(d); err != nil {
		t.Fatal(err)
	}
	for _, obj := range [][]string{{"container", "inspect", c.Name}, {"network", "inspect", n.Name}, {"image", "inspect", ghostImage}} {
		if _, err := d.Output(t.Context(), nil, obj...); err == nil {
			t.Errorf("%s %s survived the sweep", obj[0], obj[2])
		}
	}
	if _, err := os.Stat("/run/netns/" + dead + "-up"); err == nil {
		t.Errorf("namespace %s-up survived the sweep", dead)
	}
	if _, err := os.Stat(lockPath(dead)); err == nil {
		t.Errorf("lock file of %s survived the sweep", dead)
	}
	if _, err := d.Output(t.Context(), nil, "network", "inspect", liveNet.Name); err != nil {
		t.Errorf("a live session's network was swept: %v", err)
	}
	if _, err := d.Output(t.Context(), nil, "image", "inspect", liveImage); err != nil {
		t.Errorf("this binary's image was swept: %v", err)
	}
	if !alive(live.Prefix) {
		t.Error("the live session counts as dead")
	}
}
