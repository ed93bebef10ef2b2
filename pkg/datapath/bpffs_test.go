package datapath

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"outcall.dev/outcall/internal/privtest"
)

// helperEnv selects the mode of TestBPFFSHelper, which runs in a mount
// namespace of its own made by unshare(1).
const helperEnv = "OUTCALL_BPFFS_HELPER"

// TestPinsOutliveProcess (defect 13): a daemon whose bpffs is private to its
// mount namespace (what `ip netns exec` gives it) refuses to start; one on
// the bpffs the rest of the host sees starts, also from a mount namespace of
// its own, and so does the lab's `nsenter --net=`, which keeps the mount
// namespace.
func TestPinsOutliveProcess(t *testing.T) {
	privtest.Root(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		privtest.Skip(t, "needs unshare(1) to make a mount namespace")
	}
	if !isBPFFS("/sys/fs/bpf") {
		privtest.Skip(t, "no bpffs at /sys/fs/bpf")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	shared := "/sys/fs/bpf/octest-" + hex.EncodeToString(b)
	t.Cleanup(func() { os.RemoveAll(shared) })

	t.Run("this namespace", func(t *testing.T) {
		// Positive control: the test's own namespace is where pins live.
		if err := ensureBPFFS(shared, false, slog.Default()); err != nil {
			t.Fatalf("ensureBPFFS in the test's mount namespace: %v", err)
		}
	})
	for _, mode := range []string{"private", "no-bpffs", "shared", "allowed"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command("unshare", "--mount", "--propagation", "private",
				os.Args[0], "-test.run=^TestBPFFSHelper$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+mode, "OUTCALL_BPFFS_SHARED="+shared, "TMPDIR="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("helper ran: "+mode)) {
				t.Fatalf("helper %s: %v\n%s", mode, err, out)
			}
			t.Logf("%s", out)
		})
	}
}

// TestBPFFSHelper is TestPinsOutliveProcess's body inside the new mount
// namespace; it does nothing when run on its own.
func TestBPFFSHelper(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper of TestPinsOutliveProcess")
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	parent, _ := os.Readlink("/proc/" + strconv.Itoa(os.Getppid()) + "/ns/mnt")
	if self == parent {
		t.Fatalf("helper is not in a mount namespace of its own (%s)", self)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	switch mode {
	case "private", "allowed":
		// A fresh bpffs, seen only here: what a daemon mounting its own
		// under `ip netns exec` ends up with.
		mnt := t.TempDir()
		if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
			t.Fatalf("mount a private bpffs: %v", err)
		}
		t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
		dir := filepath.Join(mnt, "outcall")
		err := ensureBPFFS(dir, mode == "allowed", log)
		if mode == "allowed" {
			if err != nil || !strings.Contains(logs.String(), "WILL NOT OUTLIVE") {
				t.Errorf("--allow-private-pins: %v, log %q; want no error and a loud warning", err, logs.String())
			}
			break
		}
		var pe *PrivatePinsError
		if !errors.As(err, &pe) {
			t.Fatalf("ensureBPFFS on a private bpffs: %v, want a PrivatePinsError", err)
		}
		for _, want := range []string{"--pin-dir " + dir + ": bpffs is private to this mount namespace", `"ip netns exec"`, "nsenter --net=", "--allow-private-pins"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	case "no-bpffs":
		// /sys/fs/bpf as `ip netns exec` leaves it: a plain sysfs
		// directory. The unmounts stay in this private namespace.
		for isBPFFS("/sys/fs/bpf") {
			if err := unix.Unmount("/sys/fs/bpf", unix.MNT_DETACH); err != nil {
				t.Fatalf("unmount /sys/fs/bpf in the helper's namespace: %v", err)
			}
		}
		err := ensureBPFFS("/sys/fs/bpf/outcall", false, log)
		var pe *PrivatePinsError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "one mounted here would be private to it") {
			t.Fatalf("ensureBPFFS without a bpffs: %v, want a refusal to mount one", err)
		}
		if isBPFFS("/sys/fs/bpf") {
			t.Error("ensureBPFFS mounted a private bpffs anyway")
		}
	case "shared":
		// Positive control in a namespace of its own: the host's bpffs
		// is still the one mounted here (as in a container given the
		// host's /sys/fs/bpf), so the pins outlive the process.
		if err := ensureBPFFS(os.Getenv("OUTCALL_BPFFS_SHARED"), false, log); err != nil {
			t.Fatalf("ensureBPFFS on the shared bpffs: %v", err)
		}
	default:
		t.Fatalf("unknown helper mode %q", mode)
	}
	t.Logf("helper ran: %s", mode)
}
