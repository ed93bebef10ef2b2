package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"outcall.dev/outcall/pkg/api"
)

// AgentSocketDir is what the agent-socket helper mount exposes: a
// directory beside the agent socket (its path plus ".d") that holds only a
// hard link to it, mounted read-only over the container's /run/outcall.
// Docker bind-mounts a file by its inode, so a container given the socket
// itself would keep the dead inode of the socket an earlier outcalld
// bound, and its shim would exit 5 after every daemon restart until the
// container was recreated. Given the directory, it finds the link
// LinkAgentSocket puts there at every start.
func AgentSocketDir(agentSocket string) string { return agentSocket + ".d" }

// agentSocketLink is the link's path inside AgentSocketDir: the socket's
// name in the container.
func agentSocketLink(agentSocket string) string {
	return filepath.Join(AgentSocketDir(agentSocket), path.Base(api.AgentSocketContainerPath))
}

// LinkAgentSocket (re)creates AgentSocketDir(agentSocket) and the hard
// link in it to the agent socket outcalld just bound; it returns the
// link's removal, for shutdown: with the daemon gone the containers find
// no socket, and the shim exits 5 at once. The directory must be the
// daemon's own: a symlink or a file there is an error, never followed.
func LinkAgentSocket(agentSocket string) (unlink func() error, err error) {
	dir := AgentSocketDir(agentSocket)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("agent socket mount directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("agent socket mount directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("agent socket mount directory %s is not a directory", dir)
	}
	link := agentSocketLink(agentSocket)
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove the old agent socket link %s: %w", link, err)
	}
	if err := os.Link(agentSocket, link); err != nil {
		return nil, fmt.Errorf("link the agent socket into %s: %w", dir, err)
	}
	return func() error {
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove the agent socket link %s: %w", link, err)
		}
		return nil
	}, nil
}

// checkAgentSocketDir checks that the helper mount's directory holds the
// agent socket itself (the same inode), before a container is given it.
func checkAgentSocketDir(agentSocket string, sock fs.FileInfo) error {
	dir := AgentSocketDir(agentSocket)
	fi, err := os.Lstat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("agent socket mount directory %q cannot be checked: %v (is outcalld's agent API running?)", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("agent socket mount directory %q is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("agent socket mount directory %q cannot be read: %v", dir, err)
	}
	link := agentSocketLink(agentSocket)
	if len(entries) != 1 || entries[0].Name() != filepath.Base(link) {
		return fmt.Errorf("agent socket mount directory %q must hold only %s", dir, filepath.Base(link))
	}
	li, err := os.Lstat(link)
	if err != nil || !os.SameFile(li, sock) {
		return fmt.Errorf("agent socket mount directory %q does not hold the agent socket %q (is outcalld's agent API running?)", dir, agentSocket)
	}
	return nil
}
