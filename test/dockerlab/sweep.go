package dockerlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lockDir holds one lock file per live session, and routes.lock. It is
// under /var/tmp so that a reboot does not forget a crashed session whose
// stopped containers and networks Docker still keeps.
var lockDir = "/var/tmp/outcall-dockerlab"

// prefixPattern is a session prefix, as test/lab makes them. Nothing else
// is ever swept.
var prefixPattern = regexp.MustCompile(`^oct[0-9a-f]{6}$`)

// newPrefix returns a fresh session prefix.
func newPrefix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "oct" + hex.EncodeToString(b)
}

// lockPath is the lock file of prefix.
func lockPath(prefix string) string { return filepath.Join(lockDir, prefix+".lock") }

// register creates and locks prefix's lock file; the lock lasts until
// release, or until the process dies.
func register(prefix string) (*os.File, error) {
	if !prefixPattern.MatchString(prefix) {
		return nil, fmt.Errorf("session prefix %q is not oct and six hex digits", prefix)
	}
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock dir: %w", err)
	}
	f, err := os.OpenFile(lockPath(prefix), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock of session %s: %w", prefix, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock of session %s: %w", prefix, err)
	}
	_, _ = fmt.Fprintf(f, "pid %d\n", os.Getpid())
	return f, nil
}

// release removes a lock file and unlocks it, in that order, so that no
// one finds the file unlocked while it is still the session's.
func release(f *os.File) {
	if f == nil {
		return
	}
	_ = os.Remove(f.Name())
	_ = f.Close()
}

// alive reports whether a process holds prefix's lock.
func alive(prefix string) bool {
	f, err := os.Open(lockPath(prefix))
	if err != nil {
		return false
	}
	defer f.Close()
	// A lock held by this process through another open file conflicts
	// too, so the process's own sessions count as alive.
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
}

// deadSessions locks and returns the lock files of sessions whose process
// died; the caller removes what they left and then releases them.
func deadSessions() map[string]*os.File {
	dead := map[string]*os.File{}
	entries, _ := os.ReadDir(lockDir)
	for _, e := range entries {
		prefix, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok || !prefixPattern.MatchString(prefix) {
			continue
		}
		f, err := os.Open(filepath.Join(lockDir, e.Name()))
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close()
			continue
		}
		dead[prefix] = f
	}
	return dead
}

// Sweep removes what crashed runs of the harness left behind (see sweep);
// RequireDocker does it once per test binary.
func (d *Docker) Sweep() error { return sweep(d) }

// sweep removes what crashed sessions left: containers, networks and
// images labelled with (or named after) a session nobody holds, and the
// root-namespace links and namespaces of the dead sessions. Objects with a
// test-looking name but no session lock file are left alone: they are not
// this harness's.
func sweep(d *Docker) error {
	dead := deadSessions()
	defer func() {
		for _, f := range dead {
			release(f)
		}
	}()
	// deadOwner: a session in dead (whose lock this sweep now holds, so
	// alive would say yes), or one whose lock nobody holds.
	deadOwner := func(prefix string) bool {
		_, ok := dead[prefix]
		return ok || prefixPattern.MatchString(prefix) && !alive(prefix)
	}
	stale := func(label, name string) bool {
		if deadOwner(label) {
			return true
		}
		for p := range dead {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var errs []error
	var containers, networks, images []string
	out, err := d.Output(ctx, nil, "ps", "--all", "--no-trunc", "--format", `{{.ID}}	{{.Names}}	{{.Label "`+LabelSession+`"}}`)
	errs = append(errs, err)
	for _, line := range lines(out) {
		if id, name, label := fields3(line); stale(label, name) {
			containers = append(containers, id)
		}
	}
	out, err = d.Output(ctx, nil, "network", "ls", "--no-trunc", "--format", `{{.ID}}	{{.Name}}	{{.Label "`+LabelSession+`"}}`)
	errs = append(errs, err)
	for _, line := range lines(out) {
		if id, name, label := fields3(line); stale(label, name) {
			networks = append(networks, id)
		}
	}
	out, err = d.Output(ctx, nil, "images", "--filter", "reference="+ImageRepository+":*", "--format", "{{.Repository}}:{{.Tag}}")
	errs = append(errs, err)
	for _, ref := range lines(out) {
		if deadOwner(ref[strings.LastIndexByte(ref, '-')+1:]) {
			images = append(images, ref)
		}
	}
	if len(containers) > 0 {
		_, err := d.Output(ctx, nil, append([]string{"rm", "--force", "--volumes"}, containers...)...)
		errs = append(errs, err)
	}
	if len(networks) > 0 {
		_, err := d.Output(ctx, nil, append([]string{"network", "rm"}, networks...)...)
		errs = append(errs, err)
	}
	if len(images) > 0 {
		_, err := d.Output(ctx, nil, append([]string{"rmi", "--force"}, images...)...)
		errs = append(errs, err)
	}
	for p := range dead {
		errs = append(errs, removeNetns(p))
	}
	if n := len(containers) + len(networks) + len(images); n > 0 || len(dead) > 0 {
		fmt.Fprintf(os.Stderr, "dockerlab: swept %d containers, %d networks, %d images and %d dead sessions of earlier runs\n",
			len(containers), len(networks), len(images), len(dead))
	}
	return errors.Join(errs...)
}

// removeNetns deletes the root-namespace links and the namespaces named
// after prefix (a dead session's upstream and its veth to the root
// namespace, whose routes go with it).
func removeNetns(prefix string) error {
	var errs []error
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range lines(string(out)) {
		// "7: octab12cdr@if6: <...": the name is the second field,
		// without the peer suffix.
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, prefix) {
			if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip link del %s: %w: %s", name, err, out))
			}
		}
	}
	out, _ = exec.Command("ip", "netns", "list").Output()
	for _, line := range lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			if out, err := exec.Command("ip", "netns", "del", f[0]).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", f[0], err, out))
			}
		}
	}
	return errors.Join(errs...)
}

// RemovePrefixed removes every container, then every network, whose name
// starts with prefix, and every image of ImageRepository tagged for it:
// what a session made, and what the daemon under test made with the names
// the test gave it. Containers go with their anonymous volumes.
func (d *Docker) RemovePrefixed(ctx context.Context, prefix string) error {
	if len(prefix) < len("oct") {
		return fmt.Errorf("refusing to remove everything named %q...: too short a prefix", prefix)
	}
	var errs []error
	var containers, networks, images []string
	out, err := d.Output(ctx, nil, "ps", "--all", "--no-trunc", "--format", "{{.ID}}\t{{.Names}}")
	errs = append(errs, err)
	for _, line := range lines(out) {
		if id, name, ok := strings.Cut(line, "\t"); ok && strings.HasPrefix(name, prefix) {
			containers = append(containers, id)
		}
	}
	out, err = d.Output(ctx, nil, "network", "ls", "--no-trunc", "--format", "{{.ID}}\t{{.Name}}")
	errs = append(errs, err)
	for _, line := range lines(out) {
		if id, name, ok := strings.Cut(line, "\t"); ok && strings.HasPrefix(name, prefix) {
			networks = append(networks, id)
		}
	}
	out, err = d.Output(ctx, nil, "images", "--filter", "reference="+ImageRepository+":*", "--format", "{{.Repository}}:{{.Tag}}")
	errs = append(errs, err)
	for _, ref := range lines(out) {
		if strings.HasSuffix(ref, "-"+prefix) {
			images = append(images, ref)
		}
	}
	if len(containers) > 0 {
		_, err := d.Output(ctx, nil, append([]string{"rm", "--force", "--volumes"}, containers...)...)
		errs = append(errs, err)
	}
	if len(networks) > 0 {
		_, err := d.Output(ctx, nil, append([]string{"network", "rm"}, networks...)...)
		errs = append(errs, err)
	}
	if len(images) > 0 {
		_, err := d.Output(ctx, nil, append([]string{"rmi", "--force"}, images...)...)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// lockRoutes takes the machine-wide lock of the root namespace's test
// routes, waiting at most wait for another Upstream (of this or another
// test binary) to give it up.
func lockRoutes(wait time.Duration) (*os.File, error) { return lockFile("routes", wait) }

// lockFile takes the machine-wide lock name (routes.lock and the like,
// never a session's) under lockDir, waiting at most wait for its holder.
func lockFile(name string, wait time.Duration) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(lockDir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s lock: %w", name, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			_ = f.Truncate(0)
			_, _ = f.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+"\n"), 0)
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			holder, _ := os.ReadFile(f.Name())
			f.Close()
			return nil, fmt.Errorf("%s lock %s (held by %s): %w", name, f.Name(), strings.TrimSpace(string(holder)), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lines splits command output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	return out
}

// fields3 splits "id\tname\tlabel" (the label, last, may be empty and
// trimmed away).
func fields3(line string) (id, name, label string) {
	f := strings.SplitN(line, "\t", 3)
	for len(f) < 3 {
		f = append(f, "")
	}
	return f[0], f[1], strings.TrimSpace(f[2])
}
