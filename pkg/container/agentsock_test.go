package container

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentSocketDir: the helper mount's directory follows the socket
// across a daemon restart (a new socket, a new inode), and a directory
// that does not hold the live socket, or holds more, is refused.
func TestAgentSocketDir(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	bind := func() (net.Listener, os.FileInfo) {
		t.Helper()
		_ = os.Remove(sock)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		fi, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		return l, fi
	}
	l1, fi1 := bind()
	unlink, err := LinkAgentSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkAgentSocketDir(sock, fi1); err != nil {
		t.Fatalf("positive control: the linked directory is refused: %v", err)
	}
	dial := func() error {
		c, err := net.Dial("unix", filepath.Join(AgentSocketDir(sock), "agent.sock"))
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("the link does not reach the listener: %v", err)
	}

	// A restart: the old socket closed, a new one bound at the path. Until
	// it is linked, the directory holds a dead inode and is refused.
	l1.Close()
	l2, fi2 := bind()
	defer l2.Close()
	if err := checkAgentSocketDir(sock, fi2); err == nil || !strings.Contains(err.Error(), "does not hold the agent socket") {
		t.Errorf("a stale link is accepted: %v", err)
	}
	if dial() == nil {
		t.Errorf("a stale link still reaches a listener")
	}
	if _, err := LinkAgentSocket(sock); err != nil {
		t.Fatal(err)
	}
	if err := checkAgentSocketDir(sock, fi2); err != nil {
		t.Errorf("after relinking: %v", err)
	}
	if err := dial(); err != nil {
		t.Errorf("after relinking the directory does not reach the new listener: %v", err)
	}

	// Anything else in the directory would be exposed too.
	extra := filepath.Join(AgentSocketDir(sock), "other")
	if err := os.WriteFile(extra, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkAgentSocketDir(sock, fi2); err == nil || !strings.Contains(err.Error(), "must hold only agent.sock") {
		t.Errorf("a directory with another entry is accepted: %v", err)
	}
	os.Remove(extra)

	// Shutdown removes the link: a container finds no socket.
	if err := unlink(); err != nil {
		t.Fatal(err)
	}
	if dial() == nil {
		t.Errorf("the link survives its removal")
	}
}

// TestLinkAgentSocketRefusesSymlink: the directory is never followed
// elsewhere.
func TestLinkAgentSocketRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Symlink(t.TempDir(), AgentSocketDir(sock)); err != nil {
		t.Fatal(err)
	}
	if _, err := LinkAgentSocket(sock); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("a symlinked mount directory: %v", err)
	}
}
