package agentapi

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
)

// MaxSessions bounds the sessions held at once (one per container).
const MaxSessions = 4096

// session is a check-in: its token, and the container lifetime it was
// made in.
type session struct {
	token   string
	binding binding
}

// sessions hold one session per container, in memory only: a daemon
// restart invalidates every token, which is harmless because the shim
// checks in on every run.
type sessions struct {
	max int

	mu          sync.Mutex
	byToken     map[string]*session
	byContainer map[string]*session
}

func newSessions(max int) *sessions {
	return &sessions{max: max, byToken: map[string]*session{}, byContainer: map[string]*session{}}
}

// checkin returns the container's session, making one if it has none or
// if the one it has belongs to an earlier lifetime of its identity
// (replaced reports the container whose old session went, so its rate
// state goes too). stale is called, at the cap, to find sessions whose
// container no longer has the identity they were made under; they are
// dropped before the cap refuses anyone.
func (s *sessions) checkin(id identity, stale func(binding) bool) (tok string, replaced bool, apiErr *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byContainer[id.ContainerID]; old != nil {
		if old.binding == id.binding {
			return old.token, false, nil
		}
		s.dropLocked(old)
		replaced = true
	}
	if len(s.byToken) >= s.max {
		for _, old := range s.byToken {
			if stale(old.binding) {
				s.dropLocked(old)
			}
		}
		if len(s.byToken) >= s.max {
			return "", replaced, errSessionCapacity
		}
	}
	tok, err := newToken()
	if err != nil {
		return "", replaced, errTokenRandom
	}
	ss := &session{token: tok, binding: id.binding}
	s.byToken[tok] = ss
	s.byContainer[id.ContainerID] = ss
	return tok, replaced, nil
}

// authenticate checks a token against the verified peer: 401 for a token
// that is unknown, 403 for another container's. A session of an earlier
// lifetime of this container is dropped and answered 401; dropped says so.
func (s *sessions) authenticate(tok string, id identity) (dropped bool, apiErr *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.byToken[tok]
	switch {
	case ss == nil:
		return false, errInvalidSession
	case ss.binding.containerID != id.ContainerID:
		return false, errSessionMismatch
	case ss.binding != id.binding:
		s.dropLocked(ss)
		return true, errInvalidSession
	}
	return false, nil
}

// sweep drops the sessions stale reports, and returns their containers.
func (s *sessions) sweep(stale func(binding) bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []string
	for _, ss := range s.byToken {
		if stale(ss.binding) {
			s.dropLocked(ss)
			gone = append(gone, ss.binding.containerID)
		}
	}
	return gone
}

func (s *sessions) dropLocked(ss *session) {
	delete(s.byToken, ss.token)
	if s.byContainer[ss.binding.containerID] == ss {
		delete(s.byContainer, ss.binding.containerID)
	}
}

func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byToken)
}

// newToken is "tok-" and 32 lowercase hex digits from crypto/rand.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "tok-" + hex.EncodeToString(b[:]), nil
}

// validToken reports whether tok has a token's shape, before any lookup.
func validToken(tok string) bool {
	if len(tok) != 4+32 || tok[:4] != "tok-" {
		return false
	}
	for _, c := range []byte(tok[4:]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
