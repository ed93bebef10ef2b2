package shim

import (
	"testing"
	"time"
)

func TestParseTimeout(t *testing.T) {
	tests := []struct {
		value string
		set   bool
		want  time.Duration // 0: refused
	}{
		{"", false, 30 * time.Second},
		{"", true, 0},
		{"0", true, 0},
		{"301", true, 0},
		{"2s", true, 0},
		{" 2", true, 0},
		{"2 ", true, 0},
		{"+2", true, 0},
		{"-1", true, 0},
		{"1.5", true, 0},
		{"0x10", true, 0},
		{"99999999999999999999999", true, 0},
		{"\xff", true, 0},
		{"1", true, time.Second},
		{"2", true, 2 * time.Second},
		{"300", true, 300 * time.Second},
		{"030", true, 30 * time.Second},
	}
	for _, tt := range tests {
		got, err := ParseTimeout(tt.value, tt.set)
		if tt.want == 0 {
			if err == nil {
				t.Errorf("ParseTimeout(%q, %v) = %v, want an error", tt.value, tt.set, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseTimeout(%q, %v) = %v, %v; want %v", tt.value, tt.set, got, err, tt.want)
		}
	}
}
