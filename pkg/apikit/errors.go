package apikit

import (
	"fmt"
	"net/http"
)

// Kind is a class of failure. Components return errors of a kind (the
// sentinel itself, or Wrap/Errorf around their own message) and never pick
// an HTTP status; StatusOf is the one place that turns a kind into one.
type Kind struct{ name string }

// Error returns the kind's name, which is the message when a component
// returns the sentinel itself.
func (k *Kind) Error() string { return k.name }

// The kinds every Outcall server knows, with the status StatusOf gives them.
var (
	// ErrInvalid: the request is malformed or names something impossible
	// (400).
	ErrInvalid = &Kind{"invalid request"}
	// ErrUnauthenticated: no valid credential, e.g. an agent session token
	// (401).
	ErrUnauthenticated = &Kind{"unauthenticated"}
	// ErrForbidden: the caller is known and not allowed (403).
	ErrForbidden = &Kind{"forbidden"}
	// ErrNotFound: the named object does not exist, or the caller may not
	// learn that it does (404).
	ErrNotFound = &Kind{"not found"}
	// ErrTimeout: the client did not send its request in time (408).
	ErrTimeout = &Kind{"request not received in time"}
	// ErrConflict: the request clashes with the current state (409).
	ErrConflict = &Kind{"conflict"}
	// ErrBridgeDown: the operation needs the bridge, and it is not up (409,
	// a conflict with the current state).
	ErrBridgeDown = &Kind{"bridge is not up"}
	// ErrTooLarge: the request body exceeds the server's limit (413).
	ErrTooLarge = &Kind{"request body too large"}
	// ErrUnprocessable: well-formed input that fails validation, such as a
	// rule file that does not compile (422).
	ErrUnprocessable = &Kind{"unprocessable"}
	// ErrRateLimited: the caller exceeded its rate (429).
	ErrRateLimited = &Kind{"rate limited"}
	// ErrUnavailable: a subsystem the answer depends on is missing, busy or
	// timed out; fail closed and let the caller retry (503).
	ErrUnavailable = &Kind{"unavailable"}
)

// kindStatus is the table every server's statuses come from. A kind that is
// not in it (none today) would be a 500.
var kindStatus = map[*Kind]int{
	ErrInvalid:         http.StatusBadRequest,
	ErrUnauthenticated: http.StatusUnauthorized,
	ErrForbidden:       http.StatusForbidden,
	ErrNotFound:        http.StatusNotFound,
	ErrTimeout:         http.StatusRequestTimeout,
	ErrConflict:        http.StatusConflict,
	ErrBridgeDown:      http.StatusConflict,
	ErrTooLarge:        http.StatusRequestEntityTooLarge,
	ErrUnprocessable:   http.StatusUnprocessableEntity,
	ErrRateLimited:     http.StatusTooManyRequests,
	ErrUnavailable:     http.StatusServiceUnavailable,
}

// Error is a component's error marked with a kind. Its message is Err's,
// unchanged, so marking an error never alters what the client reads;
// errors.Is finds both the kind and everything Err wraps.
type Error struct {
	Kind *Kind
	Err  error
}

func (e *Error) Error() string   { return e.Err.Error() }
func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// Wrap marks err with kind; a nil err stays nil.
func Wrap(kind *Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: kind, Err: err}
}

// Errorf is Wrap(kind, fmt.Errorf(format, args...)); %w works as in
// fmt.Errorf.
func Errorf(kind *Kind, format string, args ...any) error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// StatusOf maps any error to the HTTP status and the envelope message every
// Outcall server answers with. The message is err.Error(). The status is
// that of the first classified error met walking err's chain from the
// outside in (the order errors.As uses), so a layer that wraps an error in
// a kind of its own decides for the layers below it:
//
//   - a *Kind, through kindStatus;
//   - an *http.MaxBytesError (a handler that read the body itself), 413;
//   - nothing classified: 500.
//
// A nil err is 200 with an empty message.
func StatusOf(err error) (status int, message string) {
	if err == nil {
		return http.StatusOK, ""
	}
	status, ok := classify(err)
	if !ok {
		status = http.StatusInternalServerError
	}
	return status, err.Error()
}

// classify walks err depth first, as errors.As does.
func classify(err error) (int, bool) {
	for err != nil {
		switch e := err.(type) {
		case *Kind:
			s, ok := kindStatus[e]
			if !ok {
				return http.StatusInternalServerError, true
			}
			return s, true
		case *http.MaxBytesError:
			return http.StatusRequestEntityTooLarge, true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if s, ok := classify(e); ok {
					return s, true
				}
			}
			return 0, false
		default:
			return 0, false
		}
	}
	return 0, false
}
