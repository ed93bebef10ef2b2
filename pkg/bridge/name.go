// Package bridge creates, inspects and removes the Linux bridges that Outcall
// containers plug into, and reports the ports that join and leave them.
//
// A bridge here is plain: it forwards whatever its ports send. Keeping an
// unmanaged port from talking is the job of the nftables floor (the bridge
// family table's ports set) and the TCX program the daemon attaches to each
// port, not of the bridge.
package bridge

import "fmt"

// maxNameLen is IFNAMSIZ-1: the kernel needs the 16th byte for the NUL.
const maxNameLen = 15

// ValidateName checks a bridge or interface name before anything is changed,
// so that a bad --bridge value fails with a clear message instead of an
// opaque EINVAL from the kernel halfway through bringing a network up.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid bridge name %q: empty", name)
	case len(name) > maxNameLen:
		return fmt.Errorf("invalid bridge name %q: longer than %d characters", name, maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("invalid bridge name %q: reserved by the kernel", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '_' || r == '-' || r == '.'
		if !ok {
			return fmt.Errorf("invalid bridge name %q: character %q not allowed (use letters, digits, '_', '-', '.')", name, r)
		}
	}
	return nil
}
