package bridge

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // substring; "" means valid
	}{
		{"outcall0", ""},
		{"a", ""},
		{"oc_net-1.x", ""},
		{"ABCDEFGHIJKLMNO", ""}, // exactly 15
		{"..a", ""},
		{"", `invalid bridge name "": empty`},
		{"ABCDEFGHIJKLMNOP", `invalid bridge name "ABCDEFGHIJKLMNOP": longer than 15 characters`},
		{".", `invalid bridge name ".": reserved`},
		{"..", `invalid bridge name "..": reserved`},
		{"a b", `invalid bridge name "a b": character ' ' not allowed (use letters, digits, '_', '-', '.')`},
		{"a/b", `character '/' not allowed`},
		{"a:b", `character ':' not allowed`},
		{"br\x00", `character '\x00' not allowed`},
		{"brü", `character 'ü' not allowed`},
		{"ééééééééé", `longer than 15 characters`}, // 9 runes, 18 bytes
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateName(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ValidateName(%q) = %v, want error containing %q", tt.name, err, tt.wantErr)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&Error{Op: "create bridge", Err: syscall.EPERM}, "bridge operation failed: create bridge: operation not permitted"},
		{&Error{Op: "attach bridge", Err: notBridgeError{"eth0", "veth"}}, `bridge operation failed: attach bridge: link "eth0" exists and is a veth, not a bridge`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if !errors.Is(tests[0].err, syscall.EPERM) {
		t.Error("errors.Is(err, EPERM) = false, want true")
	}
	if !errors.Is(tests[1].err, ErrNotBridge) {
		t.Error("errors.Is(err, ErrNotBridge) = false, want true")
	}
}
