package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKernelDependencies: the operator CLI runs on laptops and in
// operators' CI (`outcall rules validate`), so it must not link the eBPF
// datapath or cilium/ebpf, which build only for Linux. Lowering and the
// packet-table types live in kernel-free packages (rules, ruletable).
func TestNoKernelDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command: " + err.Error())
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/cilium/ebpf") || pkg == "outcall.dev/outcall/pkg/datapath" {
			t.Errorf("cmd/outcall depends on %s", pkg)
		}
	}
}
