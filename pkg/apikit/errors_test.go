package apikit

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestStatusOf(t *testing.T) {
	inner := errors.New(`rule not found: "r"`)
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantMsg    string
	}{
		{"nil", nil, 200, ""},
		{"unclassified", errors.New("netlink: boom"), 500, "netlink: boom"},
		{"invalid", Errorf(ErrInvalid, "invalid port %d", 0), 400, "invalid port 0"},
		{"unauthenticated", Wrap(ErrUnauthenticated, errors.New("invalid or missing session token")), 401, "invalid or missing session token"},
		{"forbidden", Wrap(ErrForbidden, errors.New("check-in rejected")), 403, "check-in rejected"},
		{"not found", Wrap(ErrNotFound, inner), 404, `rule not found: "r"`},
		{"timeout", Wrap(ErrTimeout, errors.New("slow")), 408, "slow"},
		{"conflict", Errorf(ErrConflict, "rule request %q is not pending", "rr-1"), 409, `rule request "rr-1" is not pending`},
		{"bridge down", Wrap(ErrBridgeDown, errors.New("bridge is not up")), 409, "bridge is not up"},
		{"too large", Errorf(ErrTooLarge, "larger than %d bytes", 10), 413, "larger than 10 bytes"},
		{"unprocessable", Wrap(ErrUnprocessable, errors.New("reload failed")), 422, "reload failed"},
		{"rate limited", Wrap(ErrRateLimited, errors.New("rate limit exceeded")), 429, "rate limit exceeded"},
		{"unavailable", Wrap(ErrUnavailable, errors.New("peer identity lookup timed out")), 503, "peer identity lookup timed out"},
		{"a bare kind is its own message", ErrNotFound, 404, "not found"},
		{"kind under context", fmt.Errorf("remove endpoint: %w", Wrap(ErrNotFound, inner)), 404, `remove endpoint: rule not found: "r"`},
		{"outermost kind wins", Errorf(ErrConflict, "approve: %w", Wrap(ErrNotFound, inner)), 409, `approve: rule not found: "r"`},
		{"kind inside a join", errors.Join(errors.New("a"), Wrap(ErrInvalid, errors.New("b"))), 400, "a\nb"},
		{"max bytes", fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 5}), 413, "read: http: request body too large"},
		{"unknown kind is internal", &Kind{"made up"}, 500, "made up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, msg := StatusOf(tt.err)
			if status != tt.wantStatus || msg != tt.wantMsg {
				t.Errorf("StatusOf = %d %q, want %d %q", status, msg, tt.wantStatus, tt.wantMsg)
			}
		})
	}
}

// TestEveryKindHasAStatus: a kind added without a row in the table would
// silently be a 500.
func TestEveryKindHasAStatus(t *testing.T) {
	kinds := []*Kind{ErrInvalid, ErrUnauthenticated, ErrForbidden, ErrNotFound, ErrTimeout, ErrConflict,
		ErrBridgeDown, ErrTooLarge, ErrUnprocessable, ErrRateLimited, ErrUnavailable}
	if len(kinds) != len(kindStatus) {
		t.Errorf("%d kinds, %d rows in kindStatus", len(kinds), len(kindStatus))
	}
	for _, k := range kinds {
		if s, ok := kindStatus[k]; !ok || s < 400 || s > 599 {
			t.Errorf("kind %q: status %d, %v", k, s, ok)
		}
	}
}

func TestWrap(t *testing.T) {
	inner := errors.New("endpoint \"web\" not found")
	err := Wrap(ErrNotFound, inner)
	tests := []struct {
		name   string
		target error
		want   bool
	}{
		{"the kind", ErrNotFound, true},
		{"the wrapped error", inner, true},
		{"another kind", ErrConflict, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(err, tt.target); got != tt.want {
				t.Errorf("errors.Is(%v) = %v, want %v", tt.target, got, tt.want)
			}
		})
	}
	if err.Error() != inner.Error() {
		t.Errorf("message %q changed from %q", err, inner)
	}
	if Wrap(ErrNotFound, nil) != nil {
		t.Error("Wrap of nil is not nil")
	}
	if e := Errorf(ErrInvalid, "bad: %w", inner); !errors.Is(e, inner) || !errors.Is(e, ErrInvalid) {
		t.Errorf("Errorf lost %%w or the kind: %v", e)
	}
}
