package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"outcall.dev/outcall/internal/privtest"
)

// The names benchmarks (issue 9): the DNS filter and the proxy, each side
// by side with peers measured by the same load generator in the same run.
//
// Layout. Outcall's daemon runs in the lab's host namespace as always; its
// load generator runs in agent a1, registered as an endpoint (the filter
// and the proxy only answer registered agents). The peers (dnsmasq,
// unbound, tinyproxy, squid) run in the same host namespace, bound to
// 10.201.0.1, the address of a plain bridge there (no Outcall program on
// it), and their load generator runs in namespace p1 plugged into that
// bridge the same way an agent is plugged into Outcall's: one veth hop into
// the host namespace either way. Every server forwards to, or dials, the
// same upstream namespace: one authoritative DNS server on Upstream:53,
// HTTP on Upstream2:8088 and TLS on Upstream2:8443.
//
// Core budget. The daemon and each peer are pinned to CPU 0 (taskset; the
// daemon with -a on all its threads, after start); every load generator
// and this test process, which runs the upstream servers, to CPU 1.
//
// Traffic. Only namespaces this benchmark creates: the peers resolve
// through /etc/netns/<host ns>/resolv.conf (ip netns exec), squid through
// dns_nameservers, Outcall through --dns-upstream, all to Upstream:53.
const (
	benchPlainGW   = "10.201.0.1"
	benchPlainIP   = "10.201.0.10"
	benchConc      = 16
	benchServerCPU = "0" // the daemon or the peer under test
	benchLoadCPU   = "1" // the load generators and this process
	benchDur       = 5 * time.Second
	benchHitName   = "hit.bench.test"
	benchMissZone  = "miss.bench.test"
	benchHoldZone  = "hold.bench.test"
	benchWebHost   = "web.bench.test"
	benchHTTPPort  = "8088"
	benchTLSPort   = "8443"
	benchDNSMasqAt = benchPlainGW + ":5301"
	benchUnboundAt = benchPlainGW + ":5302"
	benchTinyAt    = benchPlainGW + ":8888"
	benchSquidAt   = benchPlainGW + ":3128"
)

// benchRules: the bench names resolve and the web host is reachable
// through the proxy; hold.bench.test names are direct_ip (a grant written
// per answer). Every address is the upstream namespace's, a
// documentation/benchmark address: allow_private_ips.
const benchRules = `version: "1"
rules:
  - id: bench-hold
    condition: 'dns.query.endsWith(".hold.bench.test")'
    action: allow
    egress:
      mode: direct_ip
      ports: [443]
      allow_private_ips: true
  - id: bench-names
    condition: 'dns.query.endsWith(".bench.test") || network.hostname == "web.bench.test"'
    action: allow
    egress:
      mode: proxy
      allow_private_ips: true
`

var (
	benchToolsOnce sync.Once
	benchToolsErr  error
)

// benchTool builds tools/<name> into the lab's binary directory once.
func benchTool(b *testing.B, name string) string {
	b.Helper()
	benchToolsOnce.Do(func() {
		for _, n := range []string{"dnsload", "httpload"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(bins, n), "outcall.dev/outcall/tools/"+n).CombinedOutput()
			if err != nil {
				benchToolsErr = fmt.Errorf("build %s: %v\n%s", n, err, out)
				return
			}
		}
	})
	if benchToolsErr != nil {
		b.Fatal(benchToolsErr)
	}
	return filepath.Join(bins, name)
}

type benchWorld struct {
	l     *Lab
	d     *Daemon
	agent Agent
	plain string // the peers' client namespace
	dir   string // the peers' configs and logs
	upDNS *benchDNS
}

// setUpBench builds the lab, starts outcalld (pinned to CPU 0, no per-agent
// connection cap, info logs) with benchRules, one registered agent, the
// plain bridge and its client namespace, and the upstream DNS server.
func setUpBench(b *testing.B) *benchWorld {
	b.Helper()
	privtest.Root(b)
	for _, tool := range []string{"ip", "nsenter", "nft", "bpftool", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			privtest.Skip(b, tool+" not installed")
		}
	}
	benchTool(b, "dnsload")
	if runtime.NumCPU() < 2 {
		b.Skip("the names benchmarks need 2 CPUs: one for the server under test, one for the load")
	}
	// This process (the upstream servers) to CPU 1 with the load
	// generators, so that CPU 0 is the server under test's alone; back to
	// all CPUs at the end.
	self := strconv.Itoa(os.Getpid())
	b.Cleanup(func() {
		_ = exec.Command("taskset", "-a", "-cp", fmt.Sprintf("0-%d", runtime.NumCPU()-1), self).Run()
	})
	if out, err := exec.Command("taskset", "-a", "-cp", benchLoadCPU, self).CombinedOutput(); err != nil {
		b.Fatalf("pin the test process: %v\n%s", err, out)
	}
	l := New(b)
	writeBenchFile(b, filepath.Join(l.RulesDir(), "10-bench.yaml"), benchRules)
	d := l.StartDaemon(filepath.Join(bins, "outcalld"), "--max-conns-per-agent", "0", "--log-level", "info")
	l.Run("taskset", "-a", "-cp", benchServerCPU, strconv.Itoa(d.Cmd.Process.Pid))
	w := &benchWorld{l: l, d: d, dir: b.TempDir()}
	// Readable and writable by the peers' unprivileged users.
	if err := os.Chmod(w.dir, 0o777); err != nil {
		b.Fatal(err)
	}
	w.agent = l.AddAgent("a1", "10.200.0.10", "02:00:0a:c8:00:0a")
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command(filepath.Join(bins, "outcall"), "--socket", d.Socket, "endpoint", "add", "--name", "a1",
			"--interface", w.agent.Port, "--ip", w.agent.IP, "--mac", w.agent.MAC).CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("endpoint a1 never registered: %s\n%s", out, d.Log)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The peers' side: a plain bridge in the host namespace and a client.
	br := l.Prefix + "pl"
	l.InNS(l.Host, "ip", "link", "add", br, "type", "bridge")
	l.InNS(l.Host, "ip", "addr", "add", benchPlainGW+"/24", "dev", br)
	l.InNS(l.Host, "ip", "link", "set", br, "up")
	w.plain = l.Prefix + "-p1"
	port := l.Prefix + "p1"
	l.Run("ip", "netns", "add", w.plain)
	l.InNS(w.plain, "ip", "link", "set", "lo", "up")
	l.Run("ip", "link", "add", port, "netns", l.Host, "type", "veth", "peer", "name", "eth0", "netns", w.plain)
	l.InNS(w.plain, "ip", "addr", "add", benchPlainIP+"/24", "dev", "eth0")
	l.InNS(w.plain, "ip", "link", "set", "eth0", "up")
	l.InNS(w.plain, "ip", "route", "add", "default", "via", benchPlainGW)
	l.InNS(l.Host, "ip", "link", "set", port, "master", br)
	l.InNS(l.Host, "ip", "link", "set", port, "up")

	// ip netns exec binds this over /etc/resolv.conf for the peers: every
	// name they resolve goes to the upstream namespace (TESTING.md rule 5).
	netnsEtc := "/etc/netns/" + l.Host
	_, statErr := os.Stat("/etc/netns")
	b.Cleanup(func() {
		_ = os.RemoveAll(netnsEtc)
		if os.IsNotExist(statErr) {
			_ = os.Remove("/etc/netns") // only if this made it and it is empty
		}
	})
	if err := os.MkdirAll(netnsEtc, 0o755); err != nil {
		b.Fatal(err)
	}
	writeBenchFile(b, filepath.Join(netnsEtc, "resolv.conf"), "nameserver "+Upstream+"\n")

	w.upDNS = serveBenchDNS(b, l.Up, Upstream+":53")
	if r := Resolve(l.Host, "udp", Upstream+":53", benchHitName, dns.TypeA); r == nil || len(answerAddrs(r)) != 1 {
		b.Fatalf("positive control: the upstream resolver does not answer the host namespace: %v", r)
	}
	return w
}

func writeBenchFile(b *testing.B, path, content string) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}

// benchDNS is the authoritative server of the bench zone: every name under
// .bench.test exists. hold.bench.test names q<n>-... answer a distinct
// address of 198.18.0.0/18 per n (mod 16384), so each answer is its own
// grant; the others answer Upstream2.
type benchDNS struct{}

func (benchDNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) != 1 || !strings.HasSuffix(strings.ToLower(q.Question[0].Name), ".bench.test.") {
		m.Rcode = dns.RcodeNameError
		_ = w.WriteMsg(m)
		return
	}
	qq := q.Question[0]
	name := strings.ToLower(qq.Name)
	addr := netip.MustParseAddr(Upstream2)
	if strings.HasSuffix(name, "."+benchHoldZone+".") && strings.HasPrefix(name, "q") {
		if i := strings.IndexByte(name, '-'); i > 1 {
			if n, err := strconv.Atoi(name[1:i]); err == nil {
				n %= 16384
				addr = netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)})
			}
		}
	}
	if qq.Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A:   addr.AsSlice(),
		})
	}
	_ = w.WriteMsg(m)
}

func serveBenchDNS(b *testing.B, ns, addr string) *benchDNS {
	b.Helper()
	var pc net.PacketConn
	var ln net.Listener
	if err := Do(ns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		b.Fatalf("DNS server on %s in %s: %v", addr, ns, err)
	}
	s := &benchDNS{}
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	b.Cleanup(func() { _ = udp.Shutdown(); _ = tcp.Shutdown() })
	return s
}

// servePlainHTTP serves a small body on addr in ns, over TLS when tlsOn
// (httptest's self-signed certificate), until the benchmark ends.
func servePlainHTTP(b *testing.B, ns, addr string, tlsOn bool) {
	b.Helper()
	var ln net.Listener
	if err := Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		b.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello bench\n")
	}))
	srv.Listener.Close()
	srv.Listener = ln
	if tlsOn {
		// An ECDSA P-256 certificate (httptest's own is RSA): a cheap
		// handshake, so that the tunnel rate measures the proxies more
		// than the signatures.
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{benchCert(b)}}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	b.Cleanup(srv.Close)
}

// benchCert is a self-signed ECDSA P-256 certificate for benchWebHost.
func benchCert(b *testing.B) tls.Certificate {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: benchWebHost},
		DNSNames:     []string{benchWebHost},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startPeer runs a peer in the host namespace (ip netns exec, so that the
// namespace's resolv.conf applies) pinned to CPU 0, and stops it when the
// benchmark ends, also on failure.
func (w *benchWorld) startPeer(b *testing.B, name string, args ...string) {
	b.Helper()
	log, err := os.Create(filepath.Join(w.dir, name+".out"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", w.l.Host, "taskset", "-c", benchServerCPU}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
}

// peerLog is what a peer printed, for a failure message.
func (w *benchWorld) peerLog(name string) string {
	out, _ := os.ReadFile(filepath.Join(w.dir, name+".out"))
	return string(out)
}

// loadResult is a generator's key=value line.
type loadResult map[string]float64

// runLoad runs a generator in namespace ns, pinned to CPU 1.
func runLoad(b *testing.B, ns, tool string, args ...string) loadResult {
	b.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, "taskset", "-c", benchLoadCPU, benchTool(b, tool)}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s %v in %s: %v\n%s%s", tool, args, ns, err, out, stderr.String())
	}
	res := loadResult{}
	for _, kv := range strings.Fields(string(out)) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err == nil {
			res[k] = f
		}
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		b.Logf("%s: %s", tool, s)
	}
	return res
}

// waitDNS waits until server answers name from ns.
func waitDNS(b *testing.B, ns, server, name string, log func() string) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r := Resolve(ns, "udp", server, name, dns.TypeA); r != nil && len(answerAddrs(r)) == 1 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s never answered %s from %s\n%s", server, name, ns, log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// figures keeps one run's results by sub-benchmark name, for the ratios.
type figures struct {
	mu sync.Mutex
	m  map[string]loadResult
}

func (f *figures) put(name string, r loadResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]loadResult{}
	}
	f.m[name] = r
}

func (f *figures) get(name string) (loadResult, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.m[name]
	return r, ok
}

// ratios prints each case side by side (outcall and each peer that ran,
// rate and p99) and reports outcall/<peer> of key as a "ratio"
// sub-benchmark, all from this run.
func (f *figures) ratios(b *testing.B, key string, peers, cases []string) {
	b.Helper()
	b.Run("ratio", func(b *testing.B) {
		for _, c := range cases {
			o, ok := f.get("outcall/" + c)
			if !ok {
				continue
			}
			line := fmt.Sprintf("    %-8s outcall %s=%.0f p99=%.3fms", c, key, o[key], o["p99_ms"])
			for _, p := range peers {
				r, ok := f.get(p + "/" + c)
				if !ok || r[key] <= 0 {
					line += fmt.Sprintf(" | %s did not run", p)
					continue
				}
				line += fmt.Sprintf(" | %s %s=%.0f p99=%.3fms", p, key, r[key], r["p99_ms"])
				b.ReportMetric(o[key]/r[key], c+"-vs-"+p)
			}
			if b.N == 1 { // the first call; a no-op body is called again with a larger N
				fmt.Println(line)
			}
		}
	})
}

// BenchmarkDNSFilter: queries/s and p99 through Outcall's DNS filter, a
// cache hit (one name repeated) and a cache miss (a new name each query),
// and the same through dnsmasq and unbound as forwarders to the same
// upstream, same generator, concurrency, duration and core budget.
func BenchmarkDNSFilter(b *testing.B) {
	w := setUpBench(b)
	waitDNS(b, w.agent.NS, Gateway+":53", benchHitName, func() string { return w.d.Log.String() })
	var f figures
	type server struct {
		name, ns, addr, bin string
		start               func(b *testing.B)
	}
	servers := []server{
		{"outcall", w.agent.NS, Gateway + ":53", "", nil},
		{"dnsmasq", w.plain, benchDNSMasqAt, "dnsmasq", func(b *testing.B) {
			w.startPeer(b, "dnsmasq", "dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
				"--server="+Upstream+"#53", "--port=5301", "--listen-address="+benchPlainGW, "--bind-interfaces",
				"--cache-size=10000", "--pid-file="+filepath.Join(w.dir, "dnsmasq.pid"), "--log-facility=-")
		}},
		{"unbound", w.plain, benchUnboundAt, "unbound", func(b *testing.B) {
			conf := filepath.Join(w.dir, "unbound.conf")
			writeBenchFile(b, conf, fmt.Sprintf(`server:
  interface: %s
  port: 5302
  access-control: 10.201.0.0/24 allow
  do-not-query-localhost: no
  do-ip6: no
  num-threads: 1
  so-reuseport: no
  chroot: ""
  username: ""
  directory: "%s"
  pidfile: "%s/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  module-config: "iterator"
  qname-minimisation: no
  local-zone: "test." nodefault
  auto-trust-anchor-file: ""
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: %s@53
`, benchPlainGW, w.dir, w.dir, Upstream))
			w.startPeer(b, "unbound", "unbound", "-d", "-c", conf)
		}},
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			if s.bin != "" {
				if _, err := exec.LookPath(s.bin); err != nil {
					b.Skipf("%s not installed (make deps installs it): %v", s.bin, err)
				}
				s.start(b)
				waitDNS(b, s.ns, s.addr, benchHitName, func() string { return w.peerLog(s.name) })
			}
			for _, c := range []struct{ name, flag, value string }{
				{"hit", "-name", benchHitName},
				{"miss", "-suffix", benchMissZone},
			} {
				b.Run(c.name, func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						if c.name == "hit" {
							// Warm the cache.
							runLoad(b, s.ns, "dnsload", "-server", s.addr, "-c", "1", "-d", "200ms", "-name", benchHitName)
						}
						r := runLoad(b, s.ns, "dnsload", "-server", s.addr, "-c", strconv.Itoa(benchConc),
							"-d", benchDur.String(), c.flag, c.value)
						b.ReportMetric(r["qps"], "qps")
						b.ReportMetric(r["p99_ms"], "p99-ms")
						b.ReportMetric(r["timeouts"]+r["errors"]+r["rcode_other"], "failed")
						f.put(s.name+"/"+c.name, r)
					}
				})
			}
		})
	}
	f.ratios(b, "qps", []string{"dnsmasq", "unbound"}, []string{"hit", "miss"})
}

// BenchmarkDNSHoldTime: the filter's answer hold time (upstream answer to
// reply written, the direct_ip grant write included), p50 and p99 from the
// daemon's outcall_dns_answer_hold_seconds histogram, under the same load
// of new direct_ip names as the miss case.
func BenchmarkDNSHoldTime(b *testing.B) {
	w := setUpBench(b)
	waitDNS(b, w.agent.NS, Gateway+":53", benchHitName, func() string { return w.d.Log.String() })
	for i := 0; i < b.N; i++ {
		before := holdHistogram(b, w.l)
		r := runLoad(b, w.agent.NS, "dnsload", "-server", Gateway+":53", "-c", strconv.Itoa(benchConc),
			"-d", "3s", "-suffix", benchHoldZone)
		after := holdHistogram(b, w.l)
		delta := after.minus(before)
		b.ReportMetric(delta.quantile(0.50)*1e3, "p50-ms")
		b.ReportMetric(delta.quantile(0.99)*1e3, "p99-ms")
		b.ReportMetric(delta.count, "answers")
		b.ReportMetric(r["qps"], "qps")
		b.ReportMetric(r["timeouts"]+r["errors"]+r["rcode_other"], "failed")
		b.Logf("hold-time histogram delta (le -> count): %s; target p99 < 2 ms", delta)
	}
}

// histogram is a Prometheus histogram's cumulative buckets.
type histogram struct {
	les   []float64 // upper bounds, ascending, +Inf last
	cum   []float64
	count float64
}

func (h histogram) minus(o histogram) histogram {
	d := histogram{les: h.les, cum: make([]float64, len(h.cum)), count: h.count - o.count}
	for i := range h.cum {
		d.cum[i] = h.cum[i]
		if i < len(o.cum) {
			d.cum[i] -= o.cum[i]
		}
	}
	return d
}

// quantile interpolates linearly inside the bucket, like PromQL's
// histogram_quantile; in the +Inf bucket it is the largest finite bound.
func (h histogram) quantile(q float64) float64 {
	if h.count <= 0 || len(h.les) == 0 {
		return math.NaN()
	}
	rank := q * h.count
	for i, c := range h.cum {
		if c >= rank {
			if math.IsInf(h.les[i], 1) {
				if i == 0 {
					return math.NaN()
				}
				return h.les[i-1]
			}
			lo, prev := 0.0, 0.0
			if i > 0 {
				lo, prev = h.les[i-1], h.cum[i-1]
			}
			if c == prev {
				return h.les[i]
			}
			return lo + (h.les[i]-lo)*(rank-prev)/(c-prev)
		}
	}
	return h.les[len(h.les)-1]
}

func (h histogram) String() string {
	var parts []string
	prev := 0.0
	for i, le := range h.les {
		if n := h.cum[i] - prev; n > 0 {
			parts = append(parts, fmt.Sprintf("%g:%.0f", le, n))
		}
		prev = h.cum[i]
	}
	return strings.Join(parts, " ")
}

// holdHistogram scrapes outcall_dns_answer_hold_seconds from the daemon's
// metrics endpoint inside the host namespace.
func holdHistogram(b *testing.B, l *Lab) histogram {
	b.Helper()
	body := scrape(b, l)
	type bucket struct{ le, cum float64 }
	var buckets []bucket
	var h histogram
	const name = "outcall_dns_answer_hold_seconds"
	for _, line := range strings.Split(body, "\n") {
		switch {
		case strings.HasPrefix(line, name+"_bucket{"):
			i := strings.Index(line, `le="`)
			j := strings.Index(line, `"}`)
			if i < 0 || j < i {
				continue
			}
			le, err1 := strconv.ParseFloat(line[i+4:j], 64)
			cum, err2 := strconv.ParseFloat(strings.TrimSpace(line[j+2:]), 64)
			if err1 == nil && err2 == nil {
				buckets = append(buckets, bucket{le, cum})
			}
		case strings.HasPrefix(line, name+"_count "):
			h.count, _ = strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name+"_count ")), 64)
		}
	}
	if len(buckets) == 0 {
		b.Fatalf("no %s in the metrics:\n%s", name, body)
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	for _, bk := range buckets {
		h.les = append(h.les, bk.le)
		h.cum = append(h.cum, bk.cum)
	}
	return h
}

// BenchmarkProxy: CONNECT tunnels/s (CONNECT, then a TLS handshake through
// the tunnel, a new tunnel each) and plain HTTP requests/s through
// Outcall's proxy, and the same through tinyproxy and squid as plain
// forward proxies in the same host namespace.
func BenchmarkProxy(b *testing.B) {
	w := setUpBench(b)
	benchTool(b, "httpload")
	servePlainHTTP(b, w.l.Up, Upstream2+":"+benchHTTPPort, false)
	servePlainHTTP(b, w.l.Up, Upstream2+":"+benchTLSPort, true)
	var f figures
	type proxyPeer struct {
		name, ns, addr, bin string
		start               func(b *testing.B)
	}
	peers := []proxyPeer{
		{"outcall", w.agent.NS, Gateway + ":8080", "", nil},
		{"tinyproxy", w.plain, benchTinyAt, "tinyproxy", func(b *testing.B) {
			conf := filepath.Join(w.dir, "tinyproxy.conf")
			writeBenchFile(b, conf, fmt.Sprintf(`User nobody
Group nogroup
Port 8888
Listen %s
Timeout 60
MaxClients 1000
Allow 10.201.0.0/24
ConnectPort %s
DisableViaHeader Yes
LogLevel Critical
LogFile "%s/tinyproxy.log"
PidFile "%s/tinyproxy.pid"
`, benchPlainGW, benchTLSPort, w.dir, w.dir))
			w.startPeer(b, "tinyproxy", "tinyproxy", "-d", "-c", conf)
		}},
		{"squid", w.plain, benchSquidAt, "squid", func(b *testing.B) {
			conf := filepath.Join(w.dir, "squid.conf")
			writeBenchFile(b, conf, fmt.Sprintf(`http_port %s
acl agents src 10.201.0.0/24
acl tls_port port %s
acl CONNECT method CONNECT
http_access deny CONNECT !tls_port
http_access allow agents
http_access deny all
cache deny all
cache_mem 8 MB
access_log none
cache_log %s/squid-cache.log
pid_filename %s/squid.pid
coredump_dir %s
dns_nameservers %s
hosts_file none
shutdown_lifetime 0 seconds
workers 1
`, benchSquidAt, benchTLSPort, w.dir, w.dir, w.dir, Upstream))
			w.startPeer(b, "squid", "squid", "-N", "-f", conf)
		}},
	}
	connectArgs := []string{"-mode", "connect", "-target", benchWebHost + ":" + benchTLSPort, "-sni", benchWebHost}
	httpArgs := []string{"-mode", "http", "-url", "http://" + benchWebHost + ":" + benchHTTPPort + "/"}
	for _, p := range peers {
		b.Run(p.name, func(b *testing.B) {
			if p.bin != "" {
				if _, err := exec.LookPath(p.bin); err != nil {
					b.Skipf("%s not installed (make deps installs it): %v", p.bin, err)
				}
				p.start(b)
			}
			// Ready: one tunnel and one request go through.
			deadline := time.Now().Add(15 * time.Second)
			for {
				r := runLoad(b, p.ns, "httpload", append([]string{"-proxy", p.addr, "-c", "1", "-d", "100ms", "-timeout", "2s"}, httpArgs...)...)
				if r["ok"] > 0 && r["errors"] == 0 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%s never proxied a request\n%s", p.name, w.peerLog(p.name))
				}
				time.Sleep(200 * time.Millisecond)
			}
			for _, c := range []struct {
				name, unit string
				args       []string
			}{{"connect", "tunnels/s", connectArgs}, {"http", "req/s", httpArgs}} {
				b.Run(c.name, func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						r := runLoad(b, p.ns, "httpload", append([]string{"-proxy", p.addr, "-c", strconv.Itoa(benchConc),
							"-d", benchDur.String()}, c.args...)...)
						if r["ok"] == 0 {
							b.Fatalf("%s/%s: nothing went through: %v\n%s", p.name, c.name, r, w.peerLog(p.name))
						}
						b.ReportMetric(r["rate"], c.unit)
						b.ReportMetric(r["p99_ms"], "p99-ms")
						b.ReportMetric(r["errors"], "failed")
						f.put(p.name+"/"+c.name, r)
					}
				})
			}
		})
	}
	f.ratios(b, "rate", []string{"tinyproxy", "squid"}, []string{"connect", "http"})
}
