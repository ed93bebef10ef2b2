package agentapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/endpoint"
)

// Identities is the daemon's registry of bound containers:
// (*network.Controller).ContainerIdentity. It answers only for a container
// whose port is enforced right now, and it was filled from Docker inspect
// when the container's port was bound, so it is the authority on which
// Docker container id is which managed container; a label or a name the
// container chose plays no part.
type Identities interface {
	ContainerIdentity(containerID string) (endpoint.Endpoint, bool)
}

// identity is who a verified peer is.
type identity struct {
	ContainerID string
	Name        string // the Docker container name
	AgentName   string // agent.name (S013)
	binding     binding
}

// binding is one lifetime of a container's identity: a session made under
// it is valid only while the registry still reports the same one. A
// container that stops loses its identity; started again it is bound to a
// new port (a new ifindex), and its old sessions do not carry over.
type binding struct {
	containerID string
	identity    uint32
	ifindex     int
}

// peer is what the kernel said about a connection's other end when it was
// accepted: its PID (in the daemon's PID namespace) and a pidfd of that
// process, so a PID reused by another process later cannot speak for it.
type peer struct {
	pid int
	// err is why the credentials could not be read; pid and the pidfd are
	// then unusable.
	err error

	mu     sync.RWMutex
	pidfd  int // -1 when there is none
	closed bool
}

// readPeer reads SO_PEERCRED and SO_PEERPIDFD of c. A connection that is
// not a Unix socket, or whose credentials cannot be read, gets a peer with
// err set: every request on it is refused.
func readPeer(c net.Conn) *peer {
	p := &peer{pidfd: -1}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		p.err = errors.New("not a unix socket connection")
		return p
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		p.err = fmt.Errorf("peer credentials: %w", err)
		return p
	}
	var credErr, fdErr error
	var cred *unix.Ucred
	pidfd := -1
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		pidfd, fdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		p.err = fmt.Errorf("peer credentials: %w", err)
		return p
	}
	switch {
	case credErr != nil:
		p.err = fmt.Errorf("SO_PEERCRED: %w", credErr)
	case cred.Pid <= 0:
		// The peer is in a PID namespace the daemon's does not contain.
		p.err = errors.New("SO_PEERCRED: no PID in this PID namespace")
	case fdErr != nil:
		// Linux 6.5 and later give a pidfd; without one a PID reused
		// between connect and the cgroup read could not be told apart.
		p.err = fmt.Errorf("SO_PEERPIDFD: %w", fdErr)
	default:
		p.pid, p.pidfd = int(cred.Pid), pidfd
		return p
	}
	if fdErr == nil && pidfd >= 0 {
		unix.Close(pidfd)
	}
	return p
}

// alive reports whether the process the peer's pidfd refers to is still
// running (pidfd_send_signal with signal 0). While it is, its PID cannot
// have been reused.
func (p *peer) alive() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed || p.pidfd < 0 {
		return errors.New("no pidfd")
	}
	if err := unix.PidfdSendSignal(p.pidfd, 0, nil, 0); err != nil {
		return fmt.Errorf("peer process %d: %w", p.pid, err)
	}
	return nil
}

// close releases the pidfd; alive fails from then on.
func (p *peer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed && p.pidfd >= 0 {
		unix.Close(p.pidfd)
	}
	p.closed = true
}

// peerConn is an accepted connection with its peer.
type peerConn struct {
	net.Conn
	peer    *peer
	once    sync.Once
	release func()
}

// Close closes the connection, its pidfd, and frees its connection slot.
func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.peer.close()
		c.release()
	})
	return err
}

// peerListener reads each connection's peer as it is accepted and caps
// how many connections are open at once: the socket is 0666, so any local
// uid may connect, and each connection costs a goroutine and a pidfd. At
// the cap, Accept waits for a connection to close (the kernel's backlog
// holds the newcomers); header, body and idle timeouts make every
// connection close eventually.
type peerListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newPeerListener(l net.Listener, maxConns int) *peerListener {
	return &peerListener{Listener: l, slots: make(chan struct{}, maxConns), done: make(chan struct{})}
}

// Accept implements net.Listener.
func (l *peerListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &peerConn{Conn: c, peer: readPeer(c), release: func() { <-l.slots }}, nil
}

// Close implements net.Listener.
func (l *peerListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type peerKey struct{}

// connContext is http.Server.ConnContext: it puts the connection's peer
// into every request's context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*peerConn); ok {
		return context.WithValue(ctx, peerKey{}, pc.peer)
	}
	return ctx
}

func peerFrom(ctx context.Context) *peer {
	p, _ := ctx.Value(peerKey{}).(*peer)
	return p
}

// maxCgroupFile bounds what is read of /proc/<pid>/cgroup.
const maxCgroupFile = 64 << 10

// lookup finds the managed container the peer runs in (S004 §2.4): its
// /proc/<pid>/cgroup names a Docker container id, the pidfd shows the
// process is still the one that connected, and the registry has that id
// bound. Any doubt is errPeerUnverified; a peer that simply is no managed
// container is errNotManaged.
func (s *Server) lookup(p *peer) (identity, *apiError) {
	if p == nil || p.err != nil {
		return identity{}, errPeerUnverified
	}
	f, err := os.Open(filepath.Join(s.procRoot, strconv.Itoa(p.pid), "cgroup"))
	if err != nil {
		return identity{}, errPeerUnverified
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCgroupFile))
	f.Close()
	if err != nil {
		return identity{}, errPeerUnverified
	}
	// Read first, then check the process is still the one that connected:
	// if it is, the file was its own.
	if err := p.alive(); err != nil {
		return identity{}, errPeerUnverified
	}
	id, ok := ParseCgroup(data)
	if !ok {
		return identity{}, errNotManaged
	}
	e, ok := s.ids.ContainerIdentity(id)
	if !ok {
		return identity{}, errNotManaged
	}
	if e.ContainerID != id || e.Identity == 0 || e.Name == "" {
		return identity{}, errPeerUnverified
	}
	return identity{
		ContainerID: id,
		Name:        e.Name,
		AgentName:   e.AgentName(),
		binding:     binding{containerID: id, identity: e.Identity, ifindex: e.Ifindex},
	}, nil
}

// ParseCgroup finds the Docker container id in the contents of a
// /proc/<pid>/cgroup file, lowercased. Three layouts are recognised, on any
// line: cgroup v1 ".../docker/<64 hex>", systemd's
// ".../docker-<64 hex>.scope", and a path whose last component is 64 hex
// (a private cgroup namespace, "0::/../<64 hex>"). Every line that names
// an id must name the same one; otherwise, or with none, ok is false.
func ParseCgroup(data []byte) (id string, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxCgroupFile)
	for sc.Scan() {
		line := sc.Text()
		// hierarchy-ID:controllers:path; the path may itself hold ':'.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		found, ok := cgroupPathID(parts[2])
		if !ok {
			continue
		}
		if id != "" && id != found {
			return "", false
		}
		id = found
	}
	if sc.Err() != nil {
		return "", false
	}
	return id, id != ""
}

// cgroupPathID is the container id a cgroup path names. A path naming two
// different ids (a container that made a sub-cgroup named after another
// one) names none: fail closed rather than pick.
func cgroupPathID(path string) (string, bool) {
	comps := strings.Split(path, "/")
	var id string
	for i, c := range comps {
		var found string
		switch {
		case i > 0 && comps[i-1] == "docker" && isHex64(c):
			found = c
		case strings.HasPrefix(c, "docker-") && strings.HasSuffix(c, ".scope") && isHex64(c[len("docker-"):len(c)-len(".scope")]):
			found = c[len("docker-") : len(c)-len(".scope")]
		case i == len(comps)-1 && isHex64(c):
			found = c
		case isHex64(c):
			// A bare id that is neither under docker/ nor last: a
			// layout we do not know.
			return "", false
		default:
			continue
		}
		found = strings.ToLower(found)
		if id != "" && id != found {
			return "", false
		}
		id = found
	}
	return id, id != ""
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
