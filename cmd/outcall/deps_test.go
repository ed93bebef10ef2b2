package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLIDependencies: the operator CLI runs on laptops and in operators'
// CI (`outcall rules validate`), so it must not link the eBPF datapath or
// cilium/ebpf, which build only for Linux (lowering and the packet-table
// types live in kernel-free packages: rules, ruletable); and it talks to
// the Docker manager only through the host API, so it links neither the
// Docker client nor the manager's package, which does.
func TestCLIDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command: " + err.Error())
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{"github.com/cilium/ebpf", "outcall.dev/outcall/pkg/datapath",
		"github.com/docker/", "github.com/moby/", "outcall.dev/outcall/pkg/container"}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("cmd/outcall depends on %s", pkg)
			}
		}
	}
}
