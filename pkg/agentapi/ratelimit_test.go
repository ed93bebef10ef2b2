package agentapi

import (
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		ok   bool
	}{
		{"100/10", Rate{100, 10 * time.Second}, true},
		{"10/60", Rate{10, time.Minute}, true},
		{"1/1", Rate{1, time.Second}, true},
		{"1000000/86400", Rate{1_000_000, 86_400 * time.Second}, true},
		{"100", Rate{}, false},
		{"100/10/2", Rate{}, false},
		{"x/10", Rate{}, false},
		{"0/10", Rate{}, false},
		{"10/0", Rate{}, false},
		{"1000001/10", Rate{}, false},
		{"10/86401", Rate{}, false},
		{"", Rate{}, false},
		{"/", Rate{}, false},
		{"10/", Rate{}, false},
		{"/10", Rate{}, false},
		{"+10/10", Rate{}, false},
		{"-1/10", Rate{}, false},
		{" 10/10", Rate{}, false},
		{"10/10s", Rate{}, false},
		{"1e3/10", Rate{}, false},
		{"99999999999999999999/10", Rate{}, false},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}

// TestLimiter: at most Count in any window; a refusal is not recorded;
// Retry-After rounds up and is at least a second; keys are separate; idle
// keys are reaped after two windows.
func TestLimiter(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	l := newLimiter(Rate{2, 10 * time.Second}, clock.Now)
	step := func(key string, wantOK bool, wantRetry time.Duration) {
		t.Helper()
		ok, retry := l.allow(key)
		if ok != wantOK || retry != wantRetry {
			t.Fatalf("allow(%s) at %v = %v %v, want %v %v", key, clock.Now().Unix(), ok, retry, wantOK, wantRetry)
		}
	}
	step("a", true, 0)
	clock.Advance(3 * time.Second)
	step("a", true, 0)
	step("a", false, 7*time.Second)
	step("b", true, 0) // its own log
	clock.Advance(6*time.Second + 100*time.Millisecond)
	step("a", false, time.Second) // 0.9 s to go rounds up
	clock.Advance(900 * time.Millisecond)
	step("a", true, 0) // the first left exactly at its window's end
	step("a", false, 3*time.Second)
	// Hammering a full window does not push recovery out.
	for range 100 {
		step("a", false, 3*time.Second)
	}
	clock.Advance(3 * time.Second)
	step("a", true, 0)
	if n := l.size(); n != 2 {
		t.Fatalf("%d keys, want 2", n)
	}
	clock.Advance(25 * time.Second) // b idle for more than two windows, a too
	step("c", true, 0)
	if n := l.size(); n != 1 {
		t.Errorf("%d keys after reaping, want only c", n)
	}
	l.forget("c")
	if n := l.size(); n != 0 {
		t.Errorf("%d keys after forget", n)
	}
}

// TestLimiterLargeWindow: a log as long as the count, compacted as it
// slides.
func TestLimiterLargeWindow(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	l := newLimiter(Rate{1000, time.Second}, clock.Now)
	admitted := 0
	for range 10_000 {
		if ok, _ := l.allow("k"); ok {
			admitted++
		}
		clock.Advance(time.Millisecond / 2)
	}
	// 5 s of requests every 0.5 ms: 1000 per second admitted.
	if admitted < 4990 || admitted > 5010 {
		t.Errorf("admitted %d of 10000 over 5 s, want about 5000", admitted)
	}
	if lg := l.logs["k"]; cap(lg.times) > 4000 {
		t.Errorf("log capacity %d for a count of 1000: not compacted", cap(lg.times))
	}
}

func TestParseTimeoutSecs(t *testing.T) {
	for in, want := range map[string]time.Duration{"1": time.Second, "5": 5 * time.Second, "300": 300 * time.Second,
		"": 0, "0": 0, "301": 0, "2s": 0, " 2": 0, "+5": 0, "0x10": 0, "-1": 0} {
		got, err := ParseTimeoutSecs(in)
		if got != want || (err == nil) != (want != 0) {
			t.Errorf("ParseTimeoutSecs(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}
