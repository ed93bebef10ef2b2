package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// PrivatePinsError means the pinned maps and links would not outlive the
// daemon: the bpffs they live on is seen only by the daemon's own mount
// namespace, which the kernel frees when the daemon exits. Every pinned
// link would go with it and every port would be left without its program.
// The usual cause is `ip netns exec`, which unshares the mount namespace and
// remounts /sys, so /sys/fs/bpf is a new, empty directory there.
type PrivatePinsError struct {
	// Dir is the pin directory (--pin-dir).
	Dir string
	// Reason says what was found.
	Reason string
}

func (e *PrivatePinsError) Error() string {
	return fmt.Sprintf("--pin-dir %s: %s (started under \"ip netns exec\"?); pins would vanish at exit and leave every port without its program; run with nsenter --net=... instead, or pass --allow-private-pins",
		e.Dir, e.Reason)
}

// referenceProcs are the processes whose mount namespace counts as the one
// that outlives the daemon, in order of preference: PID 1, and when a
// sandbox denies access to PID 1 (it may hold capabilities we lack), the
// parent, which is what `ip netns exec` leaves behind in the namespace it
// unshared from. A variable so that a test can aim it elsewhere.
var referenceProcs = func() []string { return []string{"1", strconv.Itoa(os.Getppid())} }

// reference returns /proc/<pid> of the first reference process whose mount
// namespace can be read, and whether this process shares it.
func reference() (proc string, same bool, err error) {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return "", false, fmt.Errorf("read own mount namespace: %w", err)
	}
	var errs []error
	for _, pid := range referenceProcs() {
		proc := "/proc/" + pid
		ns, err := os.Readlink(proc + "/ns/mnt")
		if err != nil {
			errs = append(errs, fmt.Errorf("read the mount namespace of PID %s: %w", pid, err))
			continue
		}
		return proc, ns == self, nil
	}
	return "", false, errors.Join(errs...)
}

// checkPinsOutlive returns a *PrivatePinsError unless the bpffs holding dir
// is one that outlives this process: either this process is in the
// reference (init) mount namespace, or the file system at dir is the very
// one the reference process sees at the same path (same device), as in a
// container that bind-mounts the host's /sys/fs/bpf. dir must exist.
func checkPinsOutlive(dir string) error {
	proc, same, err := reference()
	if err != nil {
		return &PrivatePinsError{Dir: dir, Reason: "cannot tell whether its bpffs outlives this process: " + err.Error()}
	}
	if same {
		return nil
	}
	var mine, theirs unix.Stat_t
	if err := unix.Stat(dir, &mine); err != nil {
		return fmt.Errorf("--pin-dir %s: %w", dir, err)
	}
	if err := unix.Stat(filepath.Join(proc, "root", dir), &theirs); err != nil {
		return &PrivatePinsError{Dir: dir, Reason: "bpffs is private to this mount namespace: the init mount namespace has no such directory"}
	}
	if mine.Dev != theirs.Dev {
		return &PrivatePinsError{Dir: dir, Reason: "bpffs is private to this mount namespace"}
	}
	return nil
}

// mountWouldBePrivate returns a *PrivatePinsError when a bpffs mounted now,
// at root, would exist only in this process's mount namespace.
func mountWouldBePrivate(dir, root string) error {
	_, same, err := reference()
	if err != nil {
		return &PrivatePinsError{Dir: dir, Reason: "no bpffs at " + root + " and cannot tell whether one mounted there would outlive this process: " + err.Error()}
	}
	if !same {
		return &PrivatePinsError{Dir: dir, Reason: "no bpffs at " + root + " in this mount namespace, and one mounted here would be private to it"}
	}
	return nil
}
