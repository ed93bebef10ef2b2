package dockerlab

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"strings"
	"testing"
)

// The image's root filesystem, without Docker: layout, accounts, modes,
// and the same bytes for the same inputs (the content hash names it).
func TestRootFS(t *testing.T) {
	applets := []string{"bin/sh", "usr/bin/wget", "bin/busybox", "sbin/ip", "usr/bin/nc", "opt/x/y"}
	extras := map[string][]byte{"probe": []byte("probe!"), "nc": []byte("not busybox")}
	a, err := rootFS([]byte("BB"), applets, extras)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := rootFS([]byte("BB"), applets, extras)
	if sha256.Sum256(a) != sha256.Sum256(b) {
		t.Fatal("same inputs, different root filesystems")
	}
	c, _ := rootFS([]byte("BB2"), applets, extras)
	if sha256.Sum256(a) == sha256.Sum256(c) {
		t.Fatal("another busybox, the same root filesystem")
	}
	got := map[string]*tar.Header{}
	bodies := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got[h.Name], bodies[h.Name] = h, string(body)
	}
	want := func(name string, typ byte, mode int64) *tar.Header {
		t.Helper()
		h, ok := got[name]
		if !ok {
			t.Fatalf("%s missing", name)
		}
		if h.Typeflag != typ || h.Mode != mode {
			t.Errorf("%s: type %c mode %o, want %c %o", name, h.Typeflag, h.Mode, typ, mode)
		}
		return h
	}
	want("bin/busybox", tar.TypeReg, 0o755)
	for _, l := range []string{"bin/sh", "usr/bin/wget", "sbin/ip"} {
		if h := want(l, tar.TypeSymlink, 0o777); h.Linkname != "/bin/busybox" {
			t.Errorf("%s -> %s", l, h.Linkname)
		}
	}
	want("opt/", tar.TypeDir, 0o755)
	want("opt/x/", tar.TypeDir, 0o755)
	want("tmp/", tar.TypeDir, 0o1777)
	if h := want("home/nonroot/", tar.TypeDir, 0o755); h.Uid != NonRoot || h.Gid != NonRoot {
		t.Errorf("home owned by %d:%d", h.Uid, h.Gid)
	}
	want("bin/probe", tar.TypeReg, 0o755)
	// An extra binary replaces an applet's link of its name.
	if h := want("usr/bin/nc", tar.TypeSymlink, 0o777); h == nil {
		t.Fatal("nc link")
	}
	if bodies["bin/nc"] != "not busybox" {
		t.Errorf("bin/nc is %q", bodies["bin/nc"])
	}
	if !strings.Contains(bodies["etc/passwd"], "nonroot:x:65532:65532:") || !strings.Contains(bodies["etc/group"], "nonroot:x:65532:") {
		t.Errorf("accounts:\n%s%s", bodies["etc/passwd"], bodies["etc/group"])
	}
	for _, h := range got {
		if !h.ModTime.Equal(imageTime) {
			t.Errorf("%s: mtime %v", h.Name, h.ModTime)
		}
	}
}

// The image in Docker: busybox's applets, the non-root user, a writable
// /tmp on the read-only root, the probe copied in, and one import per
// content.
func TestImage(t *testing.T) {
	s := NewSession(t)
	img := Image(t)
	if again := Image(t); again != img {
		t.Fatalf("second Image: %s, first %s", again, img)
	}
	if !strings.HasPrefix(img, ImageRepository+":") {
		t.Fatalf("image %s outside %s", img, ImageRepository)
	}
	out, err := s.Run(t, "layout", RunOptions{Image: img, Cmd: []string{"sh", "-c",
		"id -u; id -g; touch /tmp/x && echo tmp-ok; touch /x 2>/dev/null || echo root-ro; which wget nc nslookup ip ping sleep cat timeout"}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "65532\n65532\ntmp-ok\nroot-ro\n/usr/bin/wget\n/usr/bin/nc\n/usr/bin/nslookup\n/sbin/ip\n/bin/ping\n/bin/sleep\n/bin/cat\n/usr/bin/timeout\n"
	if out != want {
		t.Errorf("container says:\n%s\nwant:\n%s", out, want)
	}

	probe := Image(t, WithBinary("probe", StaticBinary(t, ProbePackage)))
	if probe == img {
		t.Fatal("an image with the probe has the plain image's tag")
	}
	out, err = s.Run(t, "probe", RunOptions{Image: probe, Cmd: []string{"probe", "id"}})
	if err != nil || out != "uid=65532 gid=65532\n" {
		t.Fatalf("probe id: %v\n%s", err, out)
	}
	// No network, no resolver: nothing to send to.
	if out, _ := s.Docker.Output(t.Context(), nil, "inspect", "--format", "{{.HostConfig.NetworkMode}}", s.Name("probe")); out != "none" {
		t.Errorf("network mode %q", out)
	}
}

// A dynamically linked binary has no place in an image without libc.
func TestCheckStatic(t *testing.T) {
	if err := checkStatic("/bin/ls"); err == nil {
		t.Skip("/bin/ls is static here")
	} else if !strings.Contains(err.Error(), "dynamically linked") {
		t.Fatalf("checkStatic(/bin/ls): %v", err)
	}
}
