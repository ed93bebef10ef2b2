package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestStatic builds the shim as `make build` does (CGO_ENABLED=0) and checks
// that it is a static executable: no program interpreter and no dynamic
// section, so that it runs in any container image, even one without a libc
// (S005-FR-006). The control is a dynamically linked executable of this
// machine, which the same check must call dynamic.
func TestStatic(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "outcall-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if dyn, err := dynamic(bin); err != nil || dyn != "" {
		t.Fatalf("outcall-agent: %s %v; want static", dyn, err)
	}

	// Control: the system's dynamically linked tools must be reported as
	// dynamic by the same check.
	candidates := []string{"/bin/sh", "/usr/bin/env", "/bin/ls"}
	for _, p := range candidates {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue
		}
		if dyn, err := dynamic(real); err == nil && dyn != "" {
			return
		}
	}
	t.Fatalf("control: none of %q was reported dynamic", candidates)
}

// dynamic names what makes the ELF file at path dynamically linked, or
// returns "" for a static one.
func dynamic(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			return "has PT_INTERP", nil
		case elf.PT_DYNAMIC:
			return "has PT_DYNAMIC", nil
		}
	}
	if f.Section(".dynamic") != nil {
		return "has a .dynamic section", nil
	}
	return "", nil
}
