// Package rulereq keeps agent rule requests (S003-FR-024..026, IF-006..009):
// a container submits a whole rule file, it waits as pending until an operator
// approves it (the file is written into the rules dir and the policy reloaded)
// or rejects it. Requests live in one JSON file under the state dir that is
// rewritten atomically on every change, so a crash at any moment loses nothing
// that was acknowledged and never leaves a torn file.
package rulereq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"outcall.dev/outcall/internal/atomicfile"
	"outcall.dev/outcall/pkg/api"
)

// Limits of the store.
const (
	// MaxRuleFileSize bounds a submitted rule file, in bytes.
	MaxRuleFileSize = 64 << 10
	// MaxPending bounds the pending queue, so an agent cannot grow the state
	// file without limit (per-container rate limits come on top, S004).
	MaxPending = 10000
	// MaxCompleted is how many approved or rejected requests are kept for
	// audit; beyond it the ones decided longest ago are dropped.
	MaxCompleted = 1000
)

// Sentinel errors; the returned errors wrap them and name the request.
var (
	// ErrNotFound is an unknown request, or one the asking container did not
	// submit (DESIGN §7: its existence is not revealed).
	ErrNotFound = errors.New("rule request not found")
	// ErrNotPending is a request that was already approved or rejected.
	ErrNotPending = errors.New("rule request is not pending")
	// ErrInvalidReason is a reject reason that breaks S003-IF-009's bounds.
	ErrInvalidReason = errors.New("invalid reject reason")
	// ErrInvalidSubmission is a submission refused before it was queued.
	ErrInvalidSubmission = errors.New("invalid rule request")
	// ErrTooManyPending is a submission refused because MaxPending requests
	// are already waiting.
	ErrTooManyPending = errors.New("too many pending rule requests")
)

// requestError carries one of the sentinels with the exact message the
// host API shows, e.g. `rule request "rr-aabbcc112233" not found`.
type requestError struct {
	id     string
	status api.RuleRequestStatus
	kind   error
}

func (e *requestError) Error() string {
	if e.kind == ErrNotPending {
		return fmt.Sprintf("rule request %q is already %s", e.id, e.status)
	}
	return fmt.Sprintf("rule request %q not found", e.id)
}

func (e *requestError) Unwrap() error { return e.kind }

func notFound(id string) error { return &requestError{id: id, kind: ErrNotFound} }

// idPattern is the shape of every id this package hands out.
var idPattern = regexp.MustCompile(`^rr-[0-9a-f]{12}$`)

// Request is one rule request as stored.
type Request struct {
	ID          string                `json:"id"`
	ContainerID string                `json:"container_id"`
	RuleFile    string                `json:"rule_file"`
	Status      api.RuleRequestStatus `json:"status"`
	Reason      *string               `json:"reason"`
	SubmittedAt time.Time             `json:"submitted_at"`
	DecidedAt   *time.Time            `json:"decided_at,omitempty"`
}

// clone copies r so that callers never share its pointers with the store.
func (r *Request) clone() Request {
	c := *r
	if r.Reason != nil {
		reason := *r.Reason
		c.Reason = &reason
	}
	if r.DecidedAt != nil {
		t := *r.DecidedAt
		c.DecidedAt = &t
	}
	return c
}

// stateVersion is the format of the state file; another version is refused
// rather than misread.
const stateVersion = 1

type state struct {
	Version  int        `json:"version"`
	Requests []*Request `json:"requests"`
}

// Store holds rule requests durably in one JSON file (mode 0600). Safe for
// concurrent use: one mutex serialises every operation, including the whole
// of Approve, so two approvals can never interleave their writes and reloads.
type Store struct {
	path string
	log  *slog.Logger

	// Seams for tests; Open sets the real ones.
	now          func() time.Time
	random       io.Reader
	maxPending   int
	maxCompleted int

	mu sync.Mutex
	// reqs is in submission order, which is also the order in the file, so
	// "oldest first" survives a restart without comparing timestamps.
	reqs []*Request
	byID map[string]*Request
}

// Open loads the store from path. A missing file is an empty store; a file
// that cannot be read or parsed is an error naming it, because silently
// starting empty would drop requests an agent was told are queued.
func Open(path string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		path:         path,
		log:          log,
		now:          time.Now,
		random:       rand.Reader,
		maxPending:   MaxPending,
		maxCompleted: MaxCompleted,
		byID:         map[string]*Request{},
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rule request store: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse rule request store %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("rule request store %s: unsupported version %d (want %d)", path, st.Version, stateVersion)
	}
	for i, r := range st.Requests {
		if err := checkStored(r); err != nil {
			return nil, fmt.Errorf("rule request store %s: request %d: %w", path, i, err)
		}
		if _, dup := s.byID[r.ID]; dup {
			return nil, fmt.Errorf("rule request store %s: request %d: duplicate id %q", path, i, r.ID)
		}
		s.reqs = append(s.reqs, r)
		s.byID[r.ID] = r
	}
	return s, nil
}

// checkStored refuses a stored request that this package could not have
// written, so a hand-edited file cannot smuggle in a bad id or status.
func checkStored(r *Request) error {
	switch {
	case r == nil:
		return errors.New("null entry")
	case !idPattern.MatchString(r.ID):
		return fmt.Errorf("invalid id %q", r.ID)
	case r.ContainerID == "":
		return fmt.Errorf("request %q has no container_id", r.ID)
	}
	switch r.Status {
	case api.RequestPending:
		if r.DecidedAt != nil {
			return fmt.Errorf("pending request %q has decided_at", r.ID)
		}
	case api.RequestApproved, api.RequestRejected:
		if r.DecidedAt == nil {
			return fmt.Errorf("%s request %q has no decided_at", r.Status, r.ID)
		}
	default:
		return fmt.Errorf("request %q has unknown status %q", r.ID, r.Status)
	}
	return nil
}

// Submit queues a rule file from a container. The caller has already run the
// rule loader on it; Submit bounds its size, requires a container id and
// hands out a fresh id. The request is on disk before Submit returns.
func (s *Store) Submit(ctx context.Context, containerID, ruleFile string) (api.RuleRequestResponse, error) {
	if err := ctx.Err(); err != nil {
		return api.RuleRequestResponse{}, fmt.Errorf("submit rule request: %w", err)
	}
	switch {
	case containerID == "":
		return api.RuleRequestResponse{}, fmt.Errorf("%w: container id is empty", ErrInvalidSubmission)
	case ruleFile == "":
		return api.RuleRequestResponse{}, fmt.Errorf("%w: rule_file is empty", ErrInvalidSubmission)
	case len(ruleFile) > MaxRuleFileSize:
		return api.RuleRequestResponse{}, fmt.Errorf("%w: rule_file is %d bytes, at most %d allowed", ErrInvalidSubmission, len(ruleFile), MaxRuleFileSize)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	pending := 0
	for _, r := range s.reqs {
		if r.Status == api.RequestPending {
			pending++
		}
	}
	if pending >= s.maxPending {
		return api.RuleRequestResponse{}, ErrTooManyPending
	}
	id, err := s.newIDLocked()
	if err != nil {
		return api.RuleRequestResponse{}, err
	}
	r := &Request{
		ID:          id,
		ContainerID: containerID,
		RuleFile:    ruleFile,
		Status:      api.RequestPending,
		SubmittedAt: s.now().UTC(),
	}
	s.reqs = append(s.reqs, r)
	s.byID[id] = r
	if err := s.saveLocked(); err != nil {
		s.reqs = s.reqs[:len(s.reqs)-1]
		delete(s.byID, id)
		return api.RuleRequestResponse{}, fmt.Errorf("submit rule request: %w", err)
	}
	s.log.Info("rule request submitted", "id", id, "container_id", containerID, "bytes", len(ruleFile))
	return response(r), nil
}

// newIDLocked returns "rr-" and 12 random lowercase hex digits that no
// stored request has. A collision is retried; a random source that keeps
// colliding is broken, and that is an error rather than an endless loop.
func (s *Store) newIDLocked() (string, error) {
	var b [6]byte
	for range 16 {
		if _, err := io.ReadFull(s.random, b[:]); err != nil {
			return "", fmt.Errorf("generate rule request id: %w", err)
		}
		id := "rr-" + hex.EncodeToString(b[:])
		if _, taken := s.byID[id]; !taken {
			return id, nil
		}
	}
	return "", errors.New("generate rule request id: every candidate collided")
}

// Status returns a request as the container that submitted it sees it. Any
// other container gets ErrNotFound, exactly as for an unknown id.
func (s *Store) Status(ctx context.Context, containerID, id string) (api.RuleRequestResponse, error) {
	if err := ctx.Err(); err != nil {
		return api.RuleRequestResponse{}, fmt.Errorf("rule request status: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID[id]
	if !ok || containerID == "" || r.ContainerID != containerID {
		return api.RuleRequestResponse{}, notFound(id)
	}
	return response(r), nil
}

func response(r *Request) api.RuleRequestResponse {
	c := r.clone()
	return api.RuleRequestResponse{ID: c.ID, Status: c.Status, Reason: c.Reason}
}

// Pending lists the pending requests, oldest first. Completed requests stay
// in the store for audit but are not listed (S003-IF-007). Never nil.
func (s *Store) Pending(ctx context.Context) []api.PendingRuleRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.PendingRuleRequest{}
	for _, r := range s.reqs {
		if r.Status != api.RequestPending {
			continue
		}
		c := r.clone()
		out = append(out, api.PendingRuleRequest{
			ID:          c.ID,
			ContainerID: c.ContainerID,
			RuleFile:    c.RuleFile,
			Status:      c.Status,
			Reason:      c.Reason,
			SubmittedAt: c.SubmittedAt.Format(time.RFC3339),
		})
	}
	return out
}

// Get returns any request by id, whoever submitted it and whatever its state,
// for audit and tests.
func (s *Store) Get(ctx context.Context, id string) (Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID[id]
	if !ok {
		return Request{}, notFound(id)
	}
	return r.clone(), nil
}

// Reloader reloads the rule set from the rules dir and reports how many rules
// are active. Its contract, which Approve relies on: a reload is atomic, so
// when it returns an error the rule set that was active before the call is
// still active and nothing derived from it (e.g. the datapath) has changed.
type Reloader func(ctx context.Context) (rulesLoaded int, err error)

// pendingLocked returns the request if it exists and is still pending.
func (s *Store) pendingLocked(id string) (*Request, error) {
	r, ok := s.byID[id]
	if !ok {
		return nil, notFound(id)
	}
	if r.Status != api.RequestPending {
		return nil, &requestError{id: id, status: r.Status, kind: ErrNotPending}
	}
	return r, nil
}

// decideLocked marks r completed and persists it; on a failed write the
// request is pending again in memory as it still is on disk.
func (s *Store) decideLocked(r *Request, status api.RuleRequestStatus, reason *string) error {
	now := s.now().UTC()
	r.Status, r.Reason, r.DecidedAt = status, reason, &now
	dropped := s.pruneLocked()
	if err := s.saveLocked(); err != nil {
		r.Status, r.Reason, r.DecidedAt = api.RequestPending, nil, nil
		s.restoreLocked(dropped)
		return err
	}
	return nil
}

// Approve approves a pending request (S003-IF-008): it writes the request's
// rule file to <rulesDir>/agent-<id>.yaml (mode 0600, atomically, never over
// an existing file), calls reload, and only when the reload succeeded
// persists the request as approved. On any failure after the file was
// written the file is removed again and, if the reload had already taken it
// in, reload is called once more to go back to the previous rule set.
func (s *Store) Approve(ctx context.Context, id, rulesDir string, reload Reloader) (api.ApproveResult, error) {
	if err := ctx.Err(); err != nil {
		return api.ApproveResult{}, fmt.Errorf("approve rule request %q: %w", id, err)
	}
	if rulesDir == "" || reload == nil {
		return api.ApproveResult{}, fmt.Errorf("approve rule request %q: no rules dir or reloader", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.pendingLocked(id)
	if err != nil {
		return api.ApproveResult{}, err
	}
	// The rules directory may not exist yet: a daemon without rules starts
	// with an empty set.
	if err := os.MkdirAll(rulesDir, 0o750); err != nil {
		return api.ApproveResult{}, fmt.Errorf("approve rule request %q: %w", id, err)
	}
	target := filepath.Join(rulesDir, "agent-"+id+".yaml")
	if err := writeRuleFile(target, r.RuleFile); err != nil {
		return api.ApproveResult{}, fmt.Errorf("approve rule request %q: %w", id, err)
	}
	loaded, err := reload(ctx)
	if err != nil {
		// The reloader kept the old set (its contract); only the file goes.
		err = fmt.Errorf("approve rule request %q: reload rules: %w", id, err)
		return api.ApproveResult{}, errors.Join(err, atomicfile.Remove(target))
	}
	if err := s.decideLocked(r, api.RequestApproved, nil); err != nil {
		err = fmt.Errorf("approve rule request %q: %w", id, err)
		if rmErr := atomicfile.Remove(target); rmErr != nil {
			// The file stays, so reloading would change nothing: say so.
			return api.ApproveResult{}, errors.Join(err, rmErr)
		}
		if _, rbErr := reload(ctx); rbErr != nil {
			return api.ApproveResult{}, errors.Join(err, fmt.Errorf("roll back rules after removing %s: %w", target, rbErr))
		}
		return api.ApproveResult{}, err
	}
	s.log.Info("rule request approved", "id", id, "container_id", r.ContainerID, "file", target, "rules_loaded", loaded)
	return api.ApproveResult{ID: id, RulesLoaded: loaded}, nil
}

// Reject rejects a pending request with an optional audit reason
// (S003-IF-009). The reason is checked first, so a bad reason is reported
// even for an unknown id. No file is written.
func (s *Store) Reject(ctx context.Context, id string, reason *string) (api.RejectResult, error) {
	if err := ctx.Err(); err != nil {
		return api.RejectResult{}, fmt.Errorf("reject rule request %q: %w", id, err)
	}
	if reason != nil {
		if err := ValidateReason(*reason); err != nil {
			return api.RejectResult{}, err
		}
		r := *reason
		reason = &r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.pendingLocked(id)
	if err != nil {
		return api.RejectResult{}, err
	}
	if err := s.decideLocked(r, api.RequestRejected, reason); err != nil {
		return api.RejectResult{}, fmt.Errorf("reject rule request %q: %w", id, err)
	}
	s.log.Info("rule request rejected", "id", id, "container_id", r.ContainerID)
	return api.RejectResult{ID: id}, nil
}

// ValidateReason checks a reject reason against S003-IF-009: not empty, at
// most api.MaxRejectReason bytes, valid UTF-8, no control characters (a
// newline or escape sequence would forge lines in logs and terminals). The
// error wraps ErrInvalidReason and says what is wrong and where.
func ValidateReason(reason string) error {
	if reason == "" {
		return fmt.Errorf("%w: reason is empty", ErrInvalidReason)
	}
	if len(reason) > api.MaxRejectReason {
		return fmt.Errorf("%w: reason is %d bytes, at most %d allowed", ErrInvalidReason, len(reason), api.MaxRejectReason)
	}
	for i, c := range reason {
		if c == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(reason[i:]); size == 1 {
				return fmt.Errorf("%w: reason is not valid UTF-8 at byte %d", ErrInvalidReason, i)
			}
		}
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: reason contains control character %U at byte %d", ErrInvalidReason, c, i)
		}
	}
	return nil
}

// pruneLocked drops the completed requests decided longest ago until at most
// maxCompleted remain, and returns what it dropped so a failed save can put
// them back. Pending requests are never dropped.
func (s *Store) pruneLocked() []*Request {
	var done []*Request
	for _, r := range s.reqs {
		if r.Status != api.RequestPending {
			done = append(done, r)
		}
	}
	excess := len(done) - s.maxCompleted
	if excess <= 0 {
		return nil
	}
	slices.SortStableFunc(done, func(a, b *Request) int { return a.DecidedAt.Compare(*b.DecidedAt) })
	dropped := done[:excess]
	s.reqs = slices.DeleteFunc(s.reqs, func(r *Request) bool { return slices.Contains(dropped, r) })
	for _, r := range dropped {
		delete(s.byID, r.ID)
	}
	return dropped
}

// restoreLocked puts pruned requests back. Their place in submission order
// does not matter for anything but Pending, which never lists them.
func (s *Store) restoreLocked(dropped []*Request) {
	for _, r := range dropped {
		s.reqs = append(s.reqs, r)
		s.byID[r.ID] = r
	}
}

// saveLocked rewrites the state file atomically, so a kill at any moment
// leaves the old or the new state, never a torn file, and a returned nil
// means the change survives a power loss.
func (s *Store) saveLocked() error {
	b, err := json.MarshalIndent(state{Version: stateVersion, Requests: s.reqs}, "", "  ")
	if err != nil {
		return fmt.Errorf("save rule request store: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("save rule request store: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, b); err != nil {
		return fmt.Errorf("save rule request store %s: %w", s.path, err)
	}
	return nil
}

// writeRuleFile creates an approved rule file, never replacing one: its temp
// file is a dotfile, so a reload running meanwhile never reads it half
// written.
func writeRuleFile(path, content string) error {
	err := atomicfile.Create(path, []byte(content))
	if errors.Is(err, os.ErrExist) {
		err = fmt.Errorf("rule file %s already exists, refusing to overwrite it", path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
