package agentapi

import (
	"fmt"
	"net/http"
	"time"
)

// apiError is one row of S004's AgentApiError table: a status, the exact
// message the agent reads, and the outcome label metrics count it under.
// The messages are interfaces (the shim and the Docker tests match them)
// and never carry anything the agent did not already know.
type apiError struct {
	status     int
	msg        string
	outcome    string
	retryAfter time.Duration // 429 only
}

func (e *apiError) Error() string { return e.msg }

// The fixed rows.
var (
	errPeerUnverified  = &apiError{http.StatusForbidden, "peer identity could not be verified", "peer_unverified", 0}
	errPeerTimeout     = &apiError{http.StatusServiceUnavailable, "peer identity lookup timed out", "peer_timeout", 0}
	errPeerBusy        = &apiError{http.StatusServiceUnavailable, "peer identity lookup capacity exhausted", "peer_busy", 0}
	errNotManaged      = &apiError{http.StatusForbidden, "check-in rejected: peer is not a managed container", "not_managed", 0}
	errMalformed       = &apiError{http.StatusBadRequest, "invalid request: malformed JSON body", "malformed", 0}
	errTooLarge        = &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", maxBody), "too_large", 0}
	errInvalidSession  = &apiError{http.StatusUnauthorized, "invalid or missing session token", "unauthenticated", 0}
	errSessionMismatch = &apiError{http.StatusForbidden, "session is not valid for this container", "session_mismatch", 0}
	errSessionCapacity = &apiError{http.StatusServiceUnavailable, "agent session capacity reached", "session_capacity", 0}
	errRequestNotFound = &apiError{http.StatusNotFound, "rule request not found", "not_found", 0}
	errTokenRandom     = &apiError{http.StatusInternalServerError, "secure token generation unavailable", "internal", 0}
	errPersist         = &apiError{http.StatusInternalServerError, "failed to persist rule request", "internal", 0}
)

// errInvalid is a 422: well-formed JSON whose content fails validation.
func errInvalid(format string, args ...any) *apiError {
	return &apiError{http.StatusUnprocessableEntity, "invalid request: " + fmt.Sprintf(format, args...), "invalid", 0}
}

// errRateLimited is a 429 with the time until the window has room.
func errRateLimited(containerID string, retryAfter time.Duration) *apiError {
	return &apiError{http.StatusTooManyRequests, "rate limit exceeded for container " + containerID, "rate_limited", retryAfter}
}

// errNoRoute and errMethod answer requests outside the four routes, in
// the envelope like every other error (S004-IF-005).
func errNoRoute(method, path string) *apiError {
	return &apiError{http.StatusNotFound, fmt.Sprintf("no route for %s %s", method, path), "no_route", 0}
}

func errMethod(method, path string) *apiError {
	return &apiError{http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed for %s", method, path), "method_not_allowed", 0}
}
