package apikit

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// SocketOptions say who may use a socket from Listen.
type SocketOptions struct {
	// Mode is the socket's permission bits; 0 means 0600 (owner only). The
	// agent socket, open to every container, uses 0666.
	Mode fs.FileMode
	// Owner, when set, owns the socket (the host socket's operator
	// uid/gid); nil leaves the daemon's own.
	Owner *Owner
	// DirMode is the mode of the parent directories Listen creates; 0
	// means 0750. Existing directories are left as they are.
	DirMode fs.FileMode
}

// Owner is a numeric user and group; -1 leaves that one unchanged, as in
// os.Chown.
type Owner struct{ UID, GID int }

// maxSocketPath is the longest path bind(2) takes: sun_path holds 108 bytes
// on Linux (104 on the BSDs), one of them the terminating NUL.
const maxSocketPath = 103

// Listen binds a Unix socket at path that has its final mode and owner from
// the moment anyone but the daemon can reach it.
//
// bind(2) creates the socket file with 0777 minus the umask, and Go offers
// no way to set the mode first; binding at path and chmod-ing afterwards
// leaves a window in which any local user may connect (and keep the
// connection). The umask cannot be narrowed just around bind either: it is
// per process, shared by every thread, so a restrictive umask would race
// with every file other goroutines create, and a locked OS thread does not
// change that. Instead Listen binds inside a fresh private directory next to
// path (os.MkdirTemp: mode 0700, owned by the daemon, so nobody else can
// even look up the socket), sets the socket's mode and owner there, and then
// rename(2)s it onto path. The rename is atomic: path shows either nothing,
// the previous socket, or the finished one. Both names are in one directory,
// so one file system.
//
// As before: parent directories are created (DirMode); a stale socket at
// path (a daemon that died) is replaced; anything else at path is refused,
// never deleted. The listener removes path on Close, but only while path is
// still the socket it made, so a daemon that stops never deletes its
// successor's socket.
func Listen(path string, opts SocketOptions) (*Listener, error) {
	mode := opts.Mode
	if mode == 0 {
		mode = 0o600
	}
	dirMode := opts.DirMode
	if dirMode == 0 {
		dirMode = 0o750
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := checkReplaceable(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".sock")
	if err != nil {
		return nil, fmt.Errorf("create private directory for socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp) // empty after the rename; whatever failed otherwise
	tmpPath := filepath.Join(tmp, "s")
	if len(tmpPath) > maxSocketPath {
		return nil, fmt.Errorf("listen on %s: the temporary path %s is longer than %d bytes; use a shorter socket directory", path, tmpPath, maxSocketPath)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpPath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// The file moves away from the name ul knows; Listener does the unlink.
	ul.SetUnlinkOnClose(false)
	fail := func(format string, err error) (*Listener, error) {
		ul.Close()
		return nil, fmt.Errorf(format, path, err)
	}
	if err := os.Chmod(tmpPath, mode.Perm()); err != nil {
		return fail("restrict socket %s: %w", err)
	}
	if o := opts.Owner; o != nil {
		if err := os.Lchown(tmpPath, o.UID, o.GID); err != nil {
			return fail("set the owner of socket %s: %w", err)
		}
	}
	// Between the check above and here only writers of dir can have put
	// something at path; look once more so that the window is as small as
	// the platform allows without renameat2.
	if err := checkReplaceable(path); err != nil {
		ul.Close()
		return nil, err
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return fail("move socket into place at %s: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail("stat socket %s: %w", err)
	}
	return &Listener{UnixListener: ul, addr: &net.UnixAddr{Name: path, Net: "unix"}, file: fi, unlink: true}, nil
}

// checkReplaceable accepts a missing path or a socket (a stale one is
// replaced by the rename) and refuses anything else.
func checkReplaceable(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("inspect socket path %s: %w", path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("socket path %s exists and is not a socket; refusing to replace it", path)
	}
	return nil
}

// Listener is a Unix socket listener from Listen. Addr reports the path it
// was asked for; Close removes that path if it is still this socket.
type Listener struct {
	*net.UnixListener
	addr *net.UnixAddr
	file fs.FileInfo

	mu     sync.Mutex
	unlink bool
	closed bool
}

// Addr is the socket's path.
func (l *Listener) Addr() net.Addr { return l.addr }

// SetUnlinkOnClose says whether Close removes the socket file (it does
// unless told otherwise), like net.UnixListener's method of the same name.
func (l *Listener) SetUnlinkOnClose(unlink bool) {
	l.mu.Lock()
	l.unlink = unlink
	l.mu.Unlock()
}

// Close stops listening and removes the socket file, unless something else
// has taken its path since. It may be called more than once.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return err
	}
	l.closed = true
	if l.unlink {
		if fi, serr := os.Lstat(l.addr.Name); serr == nil && os.SameFile(fi, l.file) {
			_ = os.Remove(l.addr.Name)
		}
	}
	return err
}
