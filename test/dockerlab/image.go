package dockerlab

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"outcall.dev/outcall/internal/privtest"
)

// ImageRepository is the repository of every image the harness imports.
// A tag is "<content hash>-<owner prefix>": the same content is imported
// once per test binary, and each binary removes only its own images.
const ImageRepository = "outcall-test/busybox"

// NonRoot is the user and group of the image's non-root account.
const NonRoot = 65532

// busyboxPaths are where Debian's busybox-static installs the binary.
var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// ImageOption adds to the image Image builds.
type ImageOption func(*imageSpec)

type imageSpec struct {
	binaries map[string]string // name in /bin → path on the host
}

// WithBinary copies the static executable at path into the image as
// /bin/name (replacing a busybox applet of that name). Image fails the test
// for a dynamically linked file: the image has no libc.
func WithBinary(name, path string) ImageOption {
	return func(s *imageSpec) { s.binaries[name] = path }
}

var images struct {
	mu    sync.Mutex
	owner string   // this binary's image prefix
	lock  *os.File // its session lock
	tags  map[[sha256.Size]byte]string
}

// Image returns the tag of an image whose root filesystem is the host's
// busybox-static (/bin/busybox and a symlink for every applet: sh, wget,
// nc, nslookup, ip, ping, sleep, cat...), /etc/passwd and /etc/group with
// root and the non-root user NonRoot ("nonroot", home /home/nonroot), and
// a world-writable /tmp, plus the binaries of opts. It is imported with
// `docker import` once per test binary and content (nothing is pulled).
// Without busybox-static the test skips (fails under
// OUTCALL_REQUIRE_PRIVILEGED=1).
//
// Debian's busybox 1.35 wget crashes (SIGSEGV) when given -T: bound it with
// the timeout applet instead ("timeout 10 wget -q -O - URL").
func Image(t testing.TB, opts ...ImageOption) string {
	t.Helper()
	d := RequireDocker(t)
	spec := imageSpec{binaries: map[string]string{}}
	for _, o := range opts {
		o(&spec)
	}
	bb, bbPath, err := findBusybox()
	if err != nil {
		privtest.Skip(t, err.Error())
	}
	applets, err := exec.Command(bbPath, "--list-full").Output()
	if err != nil {
		t.Fatalf("%s --list-full: %v", bbPath, err)
	}
	extras := map[string][]byte{}
	for name, p := range spec.binaries {
		if name == "" || name != path.Base(name) || name == "busybox" {
			t.Fatalf("WithBinary(%q): not a plain file name", name)
		}
		if err := checkStatic(p); err != nil {
			t.Fatalf("WithBinary(%q): %v", name, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("WithBinary(%q): %v", name, err)
		}
		extras[name] = b
	}
	rootfs, err := rootFS(bb, strings.Fields(string(applets)), extras)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(rootfs)

	images.mu.Lock()
	defer images.mu.Unlock()
	if tag, ok := images.tags[sum]; ok {
		return tag
	}
	if images.owner == "" {
		// Registered before the first import, so that a crash after it
		// leaves an image the next run's sweep knows to be dead.
		p := newPrefix()
		f, err := register(p)
		if err != nil {
			t.Fatal(err)
		}
		images.owner, images.lock, images.tags = p, f, map[[sha256.Size]byte]string{}
	}
	tag := ImageRepository + ":" + hex.EncodeToString(sum[:8]) + "-" + images.owner
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if _, err := d.Output(ctx, bytes.NewReader(rootfs), "import",
		"--change", `CMD ["/bin/sh"]`,
		"--change", "LABEL "+LabelSession+"="+images.owner,
		"--message", "outcall test image: busybox-static", "-", tag); err != nil {
		t.Fatal(err)
	}
	images.tags[sum] = tag
	return tag
}

// removeImages removes the images this binary imported and releases their
// owner's lock.
func removeImages() error {
	images.mu.Lock()
	defer images.mu.Unlock()
	if images.owner == "" {
		return nil
	}
	var err error
	if len(images.tags) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		tags := []string{"rmi", "--force"}
		for _, tag := range images.tags {
			tags = append(tags, tag)
		}
		_, err = engine.docker.Output(ctx, nil, tags...)
	}
	release(images.lock)
	images.owner, images.lock, images.tags = "", nil, nil
	return err
}

// findBusybox reads the host's static busybox.
func findBusybox() ([]byte, string, error) {
	for _, p := range busyboxPaths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := checkStatic(p); err != nil {
			return nil, "", fmt.Errorf("%s is not busybox-static (make deps installs it): %w", p, err)
		}
		b, err := os.ReadFile(p)
		return b, p, err
	}
	return nil, "", errors.New("busybox-static not installed (make deps installs it)")
}

// checkStatic refuses an executable that needs a dynamic loader or shared
// libraries.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (build it with CGO_ENABLED=0)", p)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("%s needs %s (build it with CGO_ENABLED=0)", p, strings.Join(libs, ", "))
	}
	return nil
}

// imageTime is every entry's modification time: the same inputs make the
// same bytes, so the content hash names the content.
var imageTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// rootFS is the image's root filesystem as a tar stream: busybox at
// /bin/busybox, a symlink to it for every applet path ("usr/bin/wget"), the
// extra binaries at /bin/<name>, the accounts, and the directories they
// need.
func rootFS(busybox []byte, applets []string, extras map[string][]byte) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		body []byte
	}
	entries := map[string]entry{}
	dir := func(name string, mode int64, uid int) {
		entries[name+"/"] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid}}
	}
	file := func(name string, mode int64, body []byte) {
		entries[name] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: body}
	}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "home"} {
		dir(d, 0o755, 0)
	}
	dir("root", 0o700, 0)
	dir("tmp", 0o1777, 0)
	dir("home/nonroot", 0o755, NonRoot)
	file("bin/busybox", 0o755, busybox)
	for _, a := range applets {
		a = strings.TrimPrefix(path.Clean("/"+a), "/")
		if a == "" || a == "bin/busybox" || strings.HasPrefix(a, "..") {
			continue
		}
		for d := path.Dir(a); d != "."; d = path.Dir(d) {
			if _, ok := entries[d+"/"]; !ok {
				dir(d, 0o755, 0)
			}
		}
		entries[a] = entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: a, Linkname: "/bin/busybox", Mode: 0o777}}
	}
	for name, b := range extras {
		file("bin/"+name, 0o755, b)
	}
	file("etc/passwd", 0o644, []byte(fmt.Sprintf(
		"root:x:0:0:root:/root:/bin/sh\nnonroot:x:%d:%d:nonroot:/home/nonroot:/bin/sh\n", NonRoot, NonRoot)))
	file("etc/group", 0o644, []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRoot)))
	file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n"))

	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		e.hdr.ModTime = imageTime
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, fmt.Errorf("image rootfs %s: %w", n, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("image rootfs %s: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image rootfs: %w", err)
	}
	return buf.Bytes(), nil
}

// StaticBinary builds the Go main package pkg (an import path, such as
// ProbePackage) with CGO_ENABLED=0 into a directory of t and returns the
// executable's path, for WithBinary. The Go build cache makes a second
// build of the same package cheap.
func StaticBinary(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// ProbePackage is a small static client for containers: `probe http URL`
// prints the status and the body, `probe tcp ADDR` the first line the
// server sends, `probe id` the user and group it runs as.
const ProbePackage = "outcall.dev/outcall/test/dockerlab/probe"

// AgentCallPackage is a static agent API client for containers: any
// request over the mounted agent socket, with any token, printed whole
// (see its doc comment).
const AgentCallPackage = "outcall.dev/outcall/test/dockerlab/agentcall"
