package rulereq

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

const sampleRules = "version: \"1\"\nrules:\n  - id: allow-pypi\n    condition: 'network.hostname == \"pypi.org\"'\n    action: allow\n"

func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "rule-requests.json")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

func submit(t *testing.T, s *Store, container string) string {
	t.Helper()
	resp, err := s.Submit(context.Background(), container, sampleRules)
	if err != nil {
		t.Fatal(err)
	}
	return resp.ID
}

func ptr(s string) *string { return &s }

func TestSubmitStatusPending(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	if got := s.Pending(ctx); got == nil || len(got) != 0 {
		t.Fatalf("Pending on empty store = %#v, want empty non-nil slice", got)
	}
	resp, err := s.Submit(ctx, "c1", sampleRules)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^rr-[0-9a-f]{12}$`).MatchString(resp.ID) {
		t.Errorf("id %q is not rr- and 12 lowercase hex digits", resp.ID)
	}
	if resp.Status != api.RequestPending || resp.Reason != nil {
		t.Errorf("Submit = %+v, want pending without reason", resp)
	}
	id2 := submit(t, s, "c2")

	got, err := s.Status(ctx, "c1", resp.ID)
	if err != nil || got != resp {
		t.Errorf("Status(c1) = %+v, %v, want %+v", got, err, resp)
	}
	for _, tc := range []struct{ container, id string }{
		{"c2", resp.ID}, // another container's request: hidden
		{"", resp.ID},
		{"c1", "rr-000000000000"},
	} {
		_, err := s.Status(ctx, tc.container, tc.id)
		if !errors.Is(err, ErrNotFound) || err.Error() != fmt.Sprintf("rule request %q not found", tc.id) {
			t.Errorf("Status(%q, %q) = %v, want not found", tc.container, tc.id, err)
		}
	}

	pending := s.Pending(ctx)
	if len(pending) != 2 || pending[0].ID != resp.ID || pending[1].ID != id2 {
		t.Fatalf("Pending = %+v, want %s then %s", pending, resp.ID, id2)
	}
	p := pending[0]
	if p.ContainerID != "c1" || p.RuleFile != sampleRules || p.Status != api.RequestPending || p.Reason != nil {
		t.Errorf("Pending[0] = %+v", p)
	}
	if ts, err := time.Parse(time.RFC3339, p.SubmittedAt); err != nil || !strings.HasSuffix(p.SubmittedAt, "Z") || time.Since(ts) > time.Minute {
		t.Errorf("submitted_at %q is not a recent RFC 3339 UTC time (%v)", p.SubmittedAt, err)
	}

	// Everything survives a reopen, in the same order.
	s2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again := s2.Pending(ctx); fmt.Sprint(again) != fmt.Sprint(pending) {
		t.Errorf("after reopen Pending = %+v, want %+v", again, pending)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode = %v, %v, want 0600", fi.Mode(), err)
	}
}

func TestSubmitInvalid(t *testing.T) {
	s, _ := openStore(t)
	tests := []struct {
		name, container, file, want string
	}{
		{"no container", "", sampleRules, "container id is empty"},
		{"empty file", "c1", "", "rule_file is empty"},
		{"too big", "c1", strings.Repeat("#", MaxRuleFileSize+1), "rule_file is 65537 bytes, at most 65536 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Submit(context.Background(), tt.container, tt.file)
			if !errors.Is(err, ErrInvalidSubmission) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Submit = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := s.Submit(context.Background(), "c1", strings.Repeat("#", MaxRuleFileSize)); err != nil {
		t.Errorf("Submit of exactly %d bytes = %v", MaxRuleFileSize, err)
	}
}

// collidingReader hands out the same bytes twice, then others.
type collidingReader struct{ n int }

func (r *collidingReader) Read(b []byte) (int, error) {
	r.n++
	fill := byte(0xab)
	if r.n > 2 {
		fill = byte(r.n)
	}
	for i := range b {
		b[i] = fill
	}
	return len(b), nil
}

func TestIDCollisionRetried(t *testing.T) {
	s, _ := openStore(t)
	s.random = &collidingReader{}
	a, b := submit(t, s, "c1"), submit(t, s, "c1")
	if a != "rr-abababababab" || b != "rr-030303030303" {
		t.Errorf("ids = %s, %s: want the collision skipped", a, b)
	}
	s.random = bytes.NewReader(bytes.Repeat([]byte{0xab}, 6*16))
	if _, err := s.Submit(context.Background(), "c1", sampleRules); err == nil {
		t.Error("Submit with a random source that always collides succeeded")
	}
}

type fakeReload struct {
	calls int
	err   error
	n     int
}

func (f *fakeReload) reload(ctx context.Context) (int, error) {
	f.calls++
	return f.n, f.err
}

func noTempFiles(t *testing.T, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Errorf("temp file %s left in %s", e.Name(), dir)
			}
		}
	}
}

func TestApprove(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	rulesDir := t.TempDir()
	id := submit(t, s, "c1")
	other := submit(t, s, "c2")
	r := &fakeReload{n: 12}

	res, err := s.Approve(ctx, id, rulesDir, r.reload)
	if err != nil {
		t.Fatal(err)
	}
	if res != (api.ApproveResult{ID: id, RulesLoaded: 12}) || r.calls != 1 {
		t.Errorf("Approve = %+v after %d reloads, want rules_loaded 12 after 1", res, r.calls)
	}
	file := filepath.Join(rulesDir, "agent-"+id+".yaml")
	b, err := os.ReadFile(file)
	if err != nil || string(b) != sampleRules {
		t.Errorf("rule file = %q, %v, want the submitted file", b, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("rule file mode = %v, %v, want 0600", fi.Mode(), err)
	}
	noTempFiles(t, rulesDir, filepath.Dir(path))

	st, err := s.Status(ctx, "c1", id)
	if err != nil || st.Status != api.RequestApproved {
		t.Errorf("Status after approve = %+v, %v", st, err)
	}
	if p := s.Pending(ctx); len(p) != 1 || p[0].ID != other {
		t.Errorf("Pending after approve = %+v, want only %s", p, other)
	}
	// The decision is durable and kept for audit.
	s2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Get(ctx, id)
	if err != nil || got.Status != api.RequestApproved || got.DecidedAt == nil || got.ContainerID != "c1" {
		t.Errorf("Get after reopen = %+v, %v", got, err)
	}
}

func TestApproveReloadFails(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	rulesDir := t.TempDir()
	id := submit(t, s, "c1")
	reloadErr := errors.New(`duplicate rule id "allow-pypi"`)
	r := &fakeReload{err: reloadErr}

	_, err := s.Approve(ctx, id, rulesDir, r.reload)
	if !errors.Is(err, reloadErr) || !strings.Contains(err.Error(), "allow-pypi") {
		t.Fatalf("Approve = %v, want the reload error wrapped", err)
	}
	if _, err := os.Stat(filepath.Join(rulesDir, "agent-"+id+".yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rule file still there after failed reload: %v", err)
	}
	noTempFiles(t, rulesDir)
	if got, _ := s.Get(ctx, id); got.Status != api.RequestPending || got.DecidedAt != nil {
		t.Errorf("request after failed approve = %+v, want pending", got)
	}
	// A later approval can still succeed.
	r.err = nil
	if _, err := s.Approve(ctx, id, rulesDir, r.reload); err != nil {
		t.Errorf("second Approve = %v", err)
	}
}

func TestApprovePersistFails(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	path := filepath.Join(base, "state", "rule-requests.json")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	rulesDir := t.TempDir()
	id := submit(t, s, "c1")
	// Turn the state dir into a file's child: every save now fails, as root too.
	if err := os.RemoveAll(filepath.Join(base, "state")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "state"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := &fakeReload{n: 3}
	_, err = s.Approve(ctx, id, rulesDir, r.reload)
	if err == nil || !strings.Contains(err.Error(), "save rule request store") {
		t.Fatalf("Approve = %v, want a save error", err)
	}
	if r.calls != 2 {
		t.Errorf("reload called %d times, want 2 (load, then roll back)", r.calls)
	}
	if _, err := os.Stat(filepath.Join(rulesDir, "agent-"+id+".yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rule file still there after failed persist: %v", err)
	}
	if got, _ := s.Get(ctx, id); got.Status != api.RequestPending {
		t.Errorf("request after failed persist = %+v, want pending", got)
	}
	// Reject rolls back the same way.
	if _, err := s.Reject(ctx, id, ptr("no")); err == nil {
		t.Error("Reject with a broken state dir succeeded")
	}
	if got, _ := s.Get(ctx, id); got.Status != api.RequestPending || got.Reason != nil {
		t.Errorf("request after failed reject = %+v, want pending", got)
	}
}

func TestApproveRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	rulesDir := t.TempDir()
	approved, rejected, existing := submit(t, s, "c1"), submit(t, s, "c1"), submit(t, s, "c1")
	r := &fakeReload{}
	if _, err := s.Approve(ctx, approved, rulesDir, r.reload); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reject(ctx, rejected, nil); err != nil {
		t.Fatal(err)
	}
	occupied := filepath.Join(rulesDir, "agent-"+existing+".yaml")
	if err := os.WriteFile(occupied, []byte("operator's own\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.calls = 0

	tests := []struct {
		id      string
		wantIs  error
		wantMsg string
	}{
		{"rr-ffffffffffff", ErrNotFound, `rule request "rr-ffffffffffff" not found`},
		{approved, ErrNotPending, fmt.Sprintf("rule request %q is already approved", approved)},
		{rejected, ErrNotPending, fmt.Sprintf("rule request %q is already rejected", rejected)},
		{existing, nil, "already exists, refusing to overwrite"},
	}
	for _, tt := range tests {
		_, err := s.Approve(ctx, tt.id, rulesDir, r.reload)
		if err == nil || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) || !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("Approve(%s) = %v, want %q", tt.id, err, tt.wantMsg)
		}
	}
	if r.calls != 0 {
		t.Errorf("reload called %d times for refused approvals", r.calls)
	}
	if b, _ := os.ReadFile(occupied); string(b) != "operator's own\n" {
		t.Errorf("existing file overwritten: %q", b)
	}
	if got, _ := s.Get(ctx, existing); got.Status != api.RequestPending {
		t.Errorf("request with occupied file = %+v, want pending", got)
	}
	noTempFiles(t, rulesDir)
}

func TestReject(t *testing.T) {
	ctx := context.Background()
	long := strings.Repeat("a", api.MaxRejectReason)
	tests := []struct {
		name    string
		reason  *string
		wantErr string
	}{
		{"no reason", nil, ""},
		{"valid", ptr("Use the existing package mirror rule."), ""},
		{"unicode", ptr("schon erlaubt – über Regel 10"), ""},
		{"max length", ptr(long), ""},
		{"empty", ptr(""), "reason is empty"},
		{"too long", ptr(long + "a"), "reason is 1025 bytes, at most 1024 allowed"},
		{"control char", ptr("bad\x1b[31m"), "control character U+001B at byte 3"},
		{"newline", ptr("line1\nline2"), "control character U+000A at byte 5"},
		{"C1 control", ptr("x\u0085"), "control character U+0085 at byte 1"},
		{"invalid utf-8", ptr("ok\xffno"), "not valid UTF-8 at byte 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path := openStore(t)
			id := submit(t, s, "c1")
			res, err := s.Reject(ctx, id, tt.reason)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidReason) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Reject = %v, want %q", err, tt.wantErr)
				}
				if got, _ := s.Get(ctx, id); got.Status != api.RequestPending {
					t.Errorf("request after refused reject = %+v, want pending", got)
				}
				return
			}
			if err != nil || res.ID != id {
				t.Fatalf("Reject = %+v, %v", res, err)
			}
			s2, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := s2.Status(ctx, "c1", id)
			if err != nil || st.Status != api.RequestRejected || fmt.Sprint(deref(st.Reason)) != fmt.Sprint(deref(tt.reason)) {
				t.Errorf("Status after reject = %+v, %v, want rejected with reason %v", st, err, deref(tt.reason))
			}
		})
	}
}

func deref(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestRejectRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	rulesDir := t.TempDir()
	id := submit(t, s, "c1")
	if _, err := s.Reject(ctx, "rr-ffffffffffff", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Reject(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.Reject(ctx, id, ptr("first")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Reject(ctx, id, ptr("second"))
	if !errors.Is(err, ErrNotPending) || err.Error() != fmt.Sprintf("rule request %q is already rejected", id) {
		t.Errorf("second Reject = %v", err)
	}
	if got, _ := s.Get(ctx, id); *got.Reason != "first" {
		t.Errorf("reason overwritten: %q", *got.Reason)
	}
	entries, _ := os.ReadDir(rulesDir)
	if len(entries) != 0 {
		t.Errorf("reject wrote files: %v", entries)
	}
}

func TestRetention(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	s.maxCompleted, s.maxPending = 3, 4
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { clock = clock.Add(time.Second); return clock }

	var ids []string
	for range 4 {
		ids = append(ids, submit(t, s, "c1"))
	}
	if _, err := s.Submit(ctx, "c1", sampleRules); !errors.Is(err, ErrTooManyPending) || err.Error() != "too many pending rule requests" {
		t.Errorf("Submit beyond the pending bound = %v", err)
	}
	// Decide in the order 2, 0, 3, 1: the one decided first (2) goes first,
	// although it was submitted after 0.
	for _, i := range []int{2, 0, 3} {
		if _, err := s.Reject(ctx, ids[i], nil); err != nil {
			t.Fatal(err)
		}
	}
	ids = append(ids, submit(t, s, "c1")) // room again: 1 pending
	if _, err := s.Reject(ctx, ids[1], nil); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, true, false, true, true} {
		_, err := s2.Get(ctx, ids[i])
		if (err == nil) != want {
			t.Errorf("request %d (%s) kept = %v, want %v", i, ids[i], err == nil, want)
		}
	}
	if p := s2.Pending(ctx); len(p) != 1 || p[0].ID != ids[4] {
		t.Errorf("Pending = %+v, want the pending request kept", p)
	}
}

func TestOpenCorrupt(t *testing.T) {
	valid := func(mut string) string {
		return `{"version":1,"requests":[{"id":"rr-0123456789ab","container_id":"c1","rule_file":"x","status":` + mut + `,"reason":null,"submitted_at":"2026-01-02T03:04:05Z"}]}`
	}
	tests := []struct{ name, content, want string }{
		{"truncated", `{"version":1,"requests":[{"id":`, "parse rule request store"},
		{"not json", "garbage", "parse rule request store"},
		{"wrong version", `{"version":2,"requests":[]}`, "unsupported version 2"},
		{"bad status", valid(`"denied"`), `unknown status "denied"`},
		{"approved without decision", valid(`"approved"`), "has no decided_at"},
		{"bad id", strings.Replace(valid(`"pending"`), "rr-0123456789ab", "../../etc", 1), `invalid id "../../etc"`},
		{"null entry", `{"version":1,"requests":[null]}`, "null entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rule-requests.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, nil)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want an error naming %s and %q", err, path, tt.want)
			}
		})
	}
	t.Run("duplicate", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rule-requests.json")
		entry := strings.TrimSuffix(strings.TrimPrefix(valid(`"pending"`), `{"version":1,"requests":[`), `]}`)
		if err := os.WriteFile(path, []byte(`{"version":1,"requests":[`+entry+","+entry+`]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, nil); err == nil || !strings.Contains(err.Error(), "duplicate id") {
			t.Errorf("Open = %v, want duplicate id", err)
		}
	})
	t.Run("valid", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rule-requests.json")
		if err := os.WriteFile(path, []byte(valid(`"pending"`)), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p := s.Pending(context.Background()); len(p) != 1 || p[0].SubmittedAt != "2026-01-02T03:04:05Z" {
			t.Errorf("Pending = %+v", p)
		}
	})
}

func TestConcurrentSubmits(t *testing.T) {
	s, path := openStore(t)
	const workers, each = 8, 20
	ids := make(chan string, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				resp, err := s.Submit(context.Background(), fmt.Sprintf("c%d", w), sampleRules)
				if err != nil {
					t.Error(err)
					return
				}
				ids <- resp.ID
			}
		})
	}
	// Readers race the writers.
	wg.Go(func() {
		for range 50 {
			s.Pending(context.Background())
		}
	})
	wg.Wait()
	close(ids)
	s2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("id %s handed out twice", id)
		}
		seen[id] = true
		if _, err := s2.Get(context.Background(), id); err != nil {
			t.Errorf("after reopen: %v", err)
		}
	}
	if len(seen) != workers*each || len(s2.Pending(context.Background())) != workers*each {
		t.Errorf("%d ids, %d pending, want %d", len(seen), len(s2.Pending(context.Background())), workers*each)
	}
}

func TestConcurrentApprovals(t *testing.T) {
	// Two approvals of the same request: exactly one wins, and the reload
	// never runs twice at once.
	ctx := context.Background()
	s, _ := openStore(t)
	rulesDir := t.TempDir()
	id := submit(t, s, "c1")
	var mu sync.Mutex
	inReload, calls := false, 0
	reload := func(context.Context) (int, error) {
		mu.Lock()
		if inReload {
			t.Error("two reloads at once")
		}
		inReload = true
		calls++
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		mu.Lock()
		inReload = false
		mu.Unlock()
		return 1, nil
	}
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, err := s.Approve(ctx, id, rulesDir, reload)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrNotPending):
			t.Errorf("losing Approve = %v, want ErrNotPending", err)
		}
	}
	if ok != 1 || calls != 1 {
		t.Errorf("%d approvals succeeded with %d reloads, want 1 and 1", ok, calls)
	}
}

const helperEnv = "RULEREQ_HELPER_STORE"

// TestHelperProcess is not a test: TestKillDuringSubmits runs the test binary
// again with helperEnv set, and this then submits requests until killed,
// printing each id once Submit has returned it.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestKillDuringSubmits")
	}
	s, err := Open(path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		resp, err := s.Submit(context.Background(), fmt.Sprintf("c%d", i%3), sampleRules)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		if i%2 == 1 {
			// Decisions rewrite existing entries too.
			if _, err := s.Reject(context.Background(), resp.ID, ptr("killed soon")); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(4)
			}
		}
		fmt.Println(resp.ID)
	}
}

func TestKillDuringSubmits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rule-requests.json")
	// Several rounds, each killed after a different number of ids, so the
	// kill lands at different points of a write.
	for round := range 6 {
		want := 10 + 7*round
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperEnv+"="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var acked []string
		sc := bufio.NewScanner(out)
		for len(acked) < want && sc.Scan() {
			acked = append(acked, sc.Text())
		}
		// The helper is somewhere inside a Submit or Reject now.
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		if len(acked) < want {
			t.Fatalf("round %d: helper printed %d ids, then %v: %s", round, len(acked), err, stderr.String())
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: helper ended with %v, want killed: %s", round, err, stderr.String())
		}
		s, err := Open(path, nil)
		if err != nil {
			t.Fatalf("round %d: store after kill: %v", round, err)
		}
		for _, id := range acked {
			if _, err := s.Get(context.Background(), id); err != nil {
				t.Errorf("round %d: acknowledged %v lost", round, err)
			}
		}
	}
}
