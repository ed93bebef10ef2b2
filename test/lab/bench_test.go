package lab

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkThroughput compares TCP throughput from an agent to upstream
// through Outcall's bridge (TCX program + nftables floor, with a grant) with
// the same path through a plain bridge in the same host namespace. It reports
// both rates and their ratio from one run.
func BenchmarkThroughput(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("iperf3 not installed")
	}
	l := New(b)
	d := l.StartDaemon(filepath.Join(bins, "outcalld"))
	a1 := l.AddAgent("a1", "10.200.0.10", "02:00:0a:c8:00:0a")
	run := func(args ...string) {
		b.Helper()
		cmd := exec.Command(filepath.Join(bins, "outcall"), append([]string{"--socket", d.Socket}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("outcall %v: %v\n%s", args, err, out)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cmd := exec.Command(filepath.Join(bins, "outcall"), "--socket", d.Socket, "endpoint", "add", "--name", "a1", "--interface", a1.Port, "--ip", a1.IP, "--mac", a1.MAC)
		if cmd.Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("endpoint a1 never registered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	run("grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "5201")

	// The unfiltered path: a plain bridge with its own subnet.
	plain := l.Prefix + "pl"
	l.InNS(l.Host, "ip", "link", "add", plain, "type", "bridge")
	l.InNS(l.Host, "ip", "addr", "add", "10.201.0.1/24", "dev", plain)
	l.InNS(l.Host, "ip", "link", "set", plain, "up")
	l.InNS(l.Up, "ip", "route", "add", "10.201.0.0/16", "via", HostUplink)
	ns := l.Prefix + "-a3"
	port := l.Prefix + "a3"
	l.Run("ip", "netns", "add", ns)
	l.Run("ip", "link", "add", port, "netns", l.Host, "type", "veth", "peer", "name", "eth0", "netns", ns)
	l.InNS(ns, "ip", "addr", "add", "10.201.0.10/24", "dev", "eth0")
	l.InNS(ns, "ip", "link", "set", "eth0", "up")
	l.InNS(ns, "ip", "route", "add", "default", "via", "10.201.0.1")
	l.InNS(l.Host, "ip", "link", "set", port, "master", plain)
	l.InNS(l.Host, "ip", "link", "set", port, "up")

	server := exec.Command("nsenter", "--net=/run/netns/"+l.Up, "iperf3", "-s", "-B", Upstream, "-p", "5201")
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = server.Process.Kill(); _ = server.Wait() })
	time.Sleep(300 * time.Millisecond)

	measure := func(ns string) float64 {
		out, err := exec.Command("nsenter", "--net=/run/netns/"+ns, "iperf3", "-c", Upstream, "-p", "5201", "-t", "3", "-J").Output()
		if err != nil {
			b.Fatalf("iperf3 from %s: %v\n%s", ns, err, out)
		}
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatal(err)
		}
		return res.End.SumReceived.BitsPerSecond / 1e6
	}
	for i := 0; i < b.N; i++ {
		// Alternate so that machine noise hits both paths alike.
		plainMbps := measure(ns)
		filteredMbps := measure(a1.NS)
		b.ReportMetric(filteredMbps, "filtered-Mbit/s")
		b.ReportMetric(plainMbps, "plain-Mbit/s")
		b.ReportMetric(filteredMbps/plainMbps, "ratio")
	}
}
