package agentapi

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// Rate is a limit of Count requests in any sliding Window (S004-FR-014),
// as --agent-perm-rate and --agent-rule-rate give it: "<count>/<seconds>".
type Rate struct {
	Count  int
	Window time.Duration
}

// Bounds of a rate spec.
const (
	MaxRateCount         = 1_000_000
	MaxRateWindowSeconds = 86_400
)

// maxTimeoutSecs bounds --agent-timeout-secs.
const maxTimeoutSecs = api.MaxAgentTimeoutSecs

// String is the rate as a flag spells it.
func (r Rate) String() string {
	return fmt.Sprintf("%d/%d", r.Count, int64(r.Window/time.Second))
}

// ParseRate parses "<count>/<seconds>": exactly one "/", both sides
// decimal digits only (no sign, space or unit), count 1..1,000,000 and
// seconds 1..86,400. The error says what is wrong, without the flag's name.
func ParseRate(s string) (Rate, error) {
	count, secs, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(secs, "/") {
		return Rate{}, fmt.Errorf("%q is not <count>/<seconds>", s)
	}
	c, err := parseDecimal(count, MaxRateCount)
	if err != nil {
		return Rate{}, fmt.Errorf("%q: count %w", s, err)
	}
	w, err := parseDecimal(secs, MaxRateWindowSeconds)
	if err != nil {
		return Rate{}, fmt.Errorf("%q: seconds %w", s, err)
	}
	return Rate{Count: c, Window: time.Duration(w) * time.Second}, nil
}

// Validate checks a Rate built in code against the same bounds.
func (r Rate) Validate() error {
	if r.Count < 1 || r.Count > MaxRateCount {
		return fmt.Errorf("count %d is outside 1-%d", r.Count, MaxRateCount)
	}
	if r.Window < time.Second || r.Window > MaxRateWindowSeconds*time.Second || r.Window%time.Second != 0 {
		return fmt.Errorf("window %v is not a whole number of seconds in 1-%d", r.Window, MaxRateWindowSeconds)
	}
	return nil
}

// parseDecimal accepts 1..max written as plain decimal digits.
func parseDecimal(s string, max int) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("is empty")
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("%q is outside 1-%d", s, max)
	}
	return n, nil
}

// limiter is a sliding log per key (a container id): the times of the
// requests it admitted in the last window. A request is admitted while
// fewer than Count times are in the window, and only admitted requests
// are recorded, so a client that keeps hammering a full window does not
// push its own recovery further out. This is deliberately not a token
// bucket: "at most Count within any Window" is the contract (S004-AS-010),
// and a bucket admits bursts above it.
//
// Memory is at most Count timestamps per key; keys idle for two windows
// are reaped.
type limiter struct {
	rate Rate
	now  func() time.Time

	mu        sync.Mutex
	logs      map[string]*slidingLog
	lastReap  time.Time
	reapEvery time.Duration
}

// slidingLog holds admitted times, oldest first, from head on.
type slidingLog struct {
	times []time.Time
	head  int
}

func newLimiter(rate Rate, now func() time.Time) *limiter {
	return &limiter{rate: rate, now: now, logs: map[string]*slidingLog{}, reapEvery: rate.Window}
}

// allow admits and records one request for key, or refuses it and says
// how long until the oldest entry leaves the window, rounded up to whole
// seconds and at least one.
func (l *limiter) allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastReap) >= l.reapEvery {
		l.reapLocked(now)
	}
	lg := l.logs[key]
	if lg == nil {
		lg = &slidingLog{}
		l.logs[key] = lg
	}
	cutoff := now.Add(-l.rate.Window)
	for lg.head < len(lg.times) && !lg.times[lg.head].After(cutoff) {
		lg.head++
	}
	if lg.head > 0 && lg.head >= len(lg.times)/2 {
		n := copy(lg.times, lg.times[lg.head:])
		clear(lg.times[n:])
		lg.times, lg.head = lg.times[:n], 0
	}
	if len(lg.times)-lg.head >= l.rate.Count {
		wait := lg.times[lg.head].Add(l.rate.Window).Sub(now)
		secs := (wait + time.Second - 1) / time.Second
		return false, max(secs, 1) * time.Second
	}
	lg.times = append(lg.times, now)
	return true, 0
}

// forget drops key's log: its container's session ended.
func (l *limiter) forget(key string) {
	l.mu.Lock()
	delete(l.logs, key)
	l.mu.Unlock()
}

// reapLocked drops logs whose newest entry is older than two windows.
func (l *limiter) reapLocked(now time.Time) {
	l.lastReap = now
	idle := now.Add(-2 * l.rate.Window)
	for k, lg := range l.logs {
		if len(lg.times) == lg.head || lg.times[len(lg.times)-1].Before(idle) {
			delete(l.logs, k)
		}
	}
}

// size is the number of keys with a log, for tests.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.logs)
}

// ParseTimeoutSecs parses --agent-timeout-secs: 1..300 written as plain
// decimal digits (no sign, space, unit or base prefix).
func ParseTimeoutSecs(s string) (time.Duration, error) {
	n, err := parseDecimal(s, maxTimeoutSecs)
	if err != nil {
		return 0, fmt.Errorf("seconds %w", err)
	}
	return time.Duration(n) * time.Second, nil
}
