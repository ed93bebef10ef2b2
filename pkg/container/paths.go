package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"outcall.dev/outcall/pkg/api"
)

// EngineProtectedPaths are the Docker and containerd control sockets and
// the directories that hold them or the engines' state: a bind source
// equal to one, inside one, or above one is refused (S008-FR-008; the
// spec leaves the list to us, conflict 8). Both spellings of each run
// path are listed because /var/run is a symlink to /run on most hosts but
// not on all; the canonical forms are compared as well. A rootless or
// remote engine's socket is added from the client's own host
// (Policy.EngineSocket).
var EngineProtectedPaths = []string{
	"/run/docker.sock",
	"/var/run/docker.sock",
	"/run/docker",
	"/var/run/docker",
	"/run/containerd",
	"/var/run/containerd",
	"/var/lib/docker",
	"/var/lib/containerd",
	// /proc/<pid>/root and /proc/<pid>/fd/N lead anywhere: into another
	// mount namespace (the daemon's own, when it runs in a container) or
	// to a socket by its descriptor. No agent needs the host's /proc.
	"/proc",
}

// ProtectedDestinations are the container paths no caller mount may be at
// or above (S008-FR-033): the helper mounts and the resolver the daemon
// owns.
var ProtectedDestinations = []string{api.AgentSocketContainerPath, api.ShimContainerPath, ResolvConfPath}

// maxSymlinks bounds the symlinks resolve follows, as the kernel's
// MAXSYMLINKS (40) does, with room to spare.
const maxSymlinks = 255

// resolve returns the path the kernel would reach through p, which must be
// absolute and clean: every symlink on the way is followed, a ".." after a
// symlink is taken from where the link led, and once a component does not
// exist the rest is joined lexically (a dangling symlink to a socket is
// resolved to the socket's path, not let through).
func resolve(p string) (string, error) {
	done := "/"
	rest := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			done = filepath.Dir(done)
			continue
		}
		next := filepath.Join(done, c)
		fi, err := os.Lstat(next)
		// A path through a regular file (ENOTDIR) reaches nothing further,
		// like one that does not exist. Any other error (no permission to
		// look) fails the check: what cannot be seen cannot be cleared.
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return filepath.Join(append([]string{next}, rest...)...), nil
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		if hops++; hops > maxSymlinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			done = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return done, nil
}

// within reports whether p is dir or below it; both are clean and
// absolute.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// protectedPath is one deny-list entry in every form it is compared in.
type protectedPath struct {
	// name is the path as configured: the one errors show.
	name string
	// forms are its lexical and canonical spellings.
	forms []string
	// files are what it and each of its ancestors are now, for the
	// hard-link and bind-alias comparison (os.SameFile); an ancestor that
	// does not exist has none.
	files []os.FileInfo
}

// newProtected reads the current forms of each configured path. Called on
// every validation: a socket may appear, or a symlink change, at any time.
func newProtected(paths []string) []protectedPath {
	out := make([]protectedPath, 0, len(paths))
	seen := map[string]bool{}
	for _, p := range paths {
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		pp := protectedPath{name: p, forms: []string{p}}
		if r, err := resolve(p); err == nil && r != p {
			pp.forms = append(pp.forms, r)
		}
		for _, f := range pp.forms {
			for a := f; ; a = filepath.Dir(a) {
				if fi, err := os.Stat(a); err == nil {
					pp.files = append(pp.files, fi)
				}
				if a == "/" {
					break
				}
			}
		}
		out = append(out, pp)
	}
	return out
}

// exposes reports the first protected path a bind of src would expose, or
// "" for none. src is absolute and clean. A source exposes a protected
// path when any form of it (as given, or resolved through symlinks) is the
// path, above it (a parent directory), or inside it (a protected
// directory's content), or when src is the same file as the path or one of
// its ancestors (a hard link to a socket, a bind-mounted alias of /run).
func exposes(src string, protected []protectedPath) (string, error) {
	// The lexical form first: a source that names a protected path is
	// refused without looking at the file system at all.
	if p := exposedBy([]string{src}, protected); p != "" {
		return p, nil
	}
	r, err := resolve(src)
	if err != nil {
		return "", err
	}
	if p := exposedBy([]string{r}, protected); p != "" {
		return p, nil
	}
	if srcInfo, err := os.Stat(src); err == nil {
		for _, pp := range protected {
			for _, fi := range pp.files {
				if os.SameFile(srcInfo, fi) {
					return pp.name, nil
				}
			}
		}
	}
	return "", nil
}

// exposedBy returns the first protected path one of forms is, is above, or
// is inside, or "".
func exposedBy(forms []string, protected []protectedPath) string {
	for _, pp := range protected {
		for _, s := range forms {
			for _, f := range pp.forms {
				if within(f, s) || within(s, f) {
					return pp.name
				}
			}
		}
	}
	return ""
}
