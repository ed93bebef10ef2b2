package bridge

import (
	"errors"
	"fmt"
)

// Error is a failed bridge operation. Its text keeps the format the host API
// already reports (S001-IF-002: `bridge operation failed: <operation>: <OS
// error>`), and Unwrap keeps the kernel's errno reachable for errors.Is.
type Error struct {
	Op  string
	Err error
}

func (e *Error) Error() string { return "bridge operation failed: " + e.Op + ": " + e.Err.Error() }

// Unwrap lets callers test the cause, e.g. errors.Is(err, unix.EPERM).
func (e *Error) Unwrap() error { return e.Err }

// ErrNotBridge marks a name that is taken by a link of another kind. The
// manager never touches such a link: it may belong to someone else.
var ErrNotBridge = errors.New("link is not a bridge")

// ErrNoPeer marks a namespace with no veth carrying the hardware address
// PeerPort looks for.
var ErrNoPeer = errors.New("no veth with that hardware address")

type notBridgeError struct{ name, kind string }

func (e notBridgeError) Error() string {
	return fmt.Sprintf("link %q exists and is a %s, not a bridge", e.name, e.kind)
}

func (e notBridgeError) Is(target error) bool { return target == ErrNotBridge }
