package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeDaemon stands in for outcalld: an HTTP server on a Unix socket in
// t.TempDir() that answers canned envelopes per "METHOD URI" and records every
// request. outcalld's real host API is exercised by the end-to-end tests
// elsewhere; here it only has to speak the same wire format.
type fakeDaemon struct {
	path string

	mu       sync.Mutex
	requests []string // "METHOD URI BODY", BODY omitted when empty
}

func startFake(t *testing.T, routes map[string]string) *fakeDaemon {
	t.Helper()
	f := &fakeDaemon{path: filepath.Join(t.TempDir(), "host.sock")}
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := r.Method + " " + r.RequestURI
		if len(body) > 0 {
			req += " " + string(body)
		}
		f.mu.Lock()
		f.requests = append(f.requests, req)
		f.mu.Unlock()
		resp, ok := routes[r.Method+" "+r.RequestURI]
		if !ok {
			http.Error(w, `{"success":false,"error":"no such route"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, resp)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeDaemon) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

const (
	bridgeUp   = `{"success":true,"data":{"name":"outcall0","up":true,"index":42,"nftables_active":true}}`
	bridgeDown = `{"success":true,"data":{"name":"outcall0","up":false,"index":null,"nftables_active":false}}`
	ok         = `{"success":true}`
	permErr    = `{"success":false,"error":"bridge operation failed: create bridge: Operation not permitted"}`
)

// cliCase is one run of the CLI against a fake daemon.
type cliCase struct {
	name string
	// args; "$SOCK" is replaced by the fake daemon's socket, "$MISSING" by a
	// path where nothing listens and "$DIR" by a directory holding files.
	// Without "$SOCK" or "$MISSING", "--socket $SOCK" is appended.
	args     []string
	routes   map[string]string
	stdin    string
	files    map[string]string // written into $DIR before the run
	validate validator         // nil means the real validateDir
	wantOut  string
	wantErr  string
	wantCode int
	wantReqs []string // exact requests the daemon saw; nil means none
}

func runCases(t *testing.T, tests []cliCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, tt.routes)
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			missing := filepath.Join(t.TempDir(), "missing.sock")
			expand := strings.NewReplacer("$SOCK", f.path, "$MISSING", missing, "$DIR", dir)
			var args []string
			explicit := false
			for _, a := range tt.args {
				explicit = explicit || strings.Contains(a, "$SOCK") || strings.Contains(a, "$MISSING")
				args = append(args, expand.Replace(a))
			}
			if !explicit {
				args = append(args, "--socket", f.path)
			}
			c := cli{stdin: strings.NewReader(tt.stdin), validate: tt.validate}
			if c.validate == nil {
				c.validate = validateDir
			}
			var stdout, stderr bytes.Buffer
			c.stdout, c.stderr = &stdout, &stderr
			code := c.run(args)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if got := stdout.String(); got != tt.wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, tt.wantOut)
			}
			if got, want := stderr.String(), expand.Replace(tt.wantErr); got != want {
				t.Errorf("stderr = %q, want %q", got, want)
			}
			if got := f.recorded(); strings.Join(got, "\n") != strings.Join(tt.wantReqs, "\n") {
				t.Errorf("daemon saw %q, want %q", got, tt.wantReqs)
			}
		})
	}
}

func TestCLI(t *testing.T) {
	runCases(t, []cliCase{
		// bridge
		{
			name:     "bridge status up",
			args:     []string{"bridge", "status"},
			routes:   map[string]string{"GET /api/v1/bridge": bridgeUp},
			wantOut:  "Bridge:    outcall0\nStatus:    up\nIndex:     42\nnftables:  active\n",
			wantReqs: []string{"GET /api/v1/bridge"},
		},
		{
			name:     "bridge status with a port missing its program",
			args:     []string{"bridge", "status"},
			routes:   map[string]string{"GET /api/v1/bridge": `{"success":true,"data":{"name":"outcall0","up":true,"index":42,"nftables_active":true,"ports":3,"ports_enforced":2}}`},
			wantOut:  "Bridge:    outcall0\nStatus:    up\nIndex:     42\nnftables:  active\nDatapath:  2 of 3 ports enforced (a program is missing; outcalld re-attaches it)\n",
			wantReqs: []string{"GET /api/v1/bridge"},
		},
		{
			name:     "bridge status with Docker degraded",
			args:     []string{"bridge", "status"},
			routes:   map[string]string{"GET /api/v1/bridge": `{"success":true,"data":{"name":"outcall0","up":true,"index":42,"nftables_active":true,"docker":{"state":"degraded","reason":"ping: connection refused"}}}`},
			wantOut:  "Bridge:    outcall0\nStatus:    up\nIndex:     42\nnftables:  active\nDocker:    degraded (ping: connection refused); enforcement goes on, containers cannot be created or followed until Docker answers\n",
			wantReqs: []string{"GET /api/v1/bridge"},
		},
		{
			name:     "bridge status down",
			args:     []string{"bridge", "status"},
			routes:   map[string]string{"GET /api/v1/bridge": bridgeDown},
			wantOut:  "Bridge:    outcall0\nStatus:    down\nnftables:  inactive\n",
			wantReqs: []string{"GET /api/v1/bridge"},
		},
		{
			name:     "bridge up",
			args:     []string{"bridge", "up"},
			routes:   map[string]string{"POST /api/v1/bridge/up": ok},
			wantOut:  "Bridge is up.\n",
			wantReqs: []string{"POST /api/v1/bridge/up"},
		},
		{
			name:     "bridge down",
			args:     []string{"bridge", "down"},
			routes:   map[string]string{"POST /api/v1/bridge/down": ok},
			wantOut:  "Bridge is down.\n",
			wantReqs: []string{"POST /api/v1/bridge/down"},
		},
		{
			name:     "bridge down --remove-ports",
			args:     []string{"bridge", "down", "--remove-ports"},
			routes:   map[string]string{"POST /api/v1/bridge/down?remove_ports=true": ok},
			wantOut:  "Bridge is down.\n",
			wantReqs: []string{"POST /api/v1/bridge/down?remove_ports=true"},
		},
		{
			name:     "bridge down refused while ports exist",
			args:     []string{"bridge", "down"},
			routes:   map[string]string{"POST /api/v1/bridge/down": `{"success":false,"error":"bridge outcall0 has ports: veth1, veth2 — remove them first or use --remove-ports"}`},
			wantErr:  "Error: bridge outcall0 has ports: veth1, veth2 — remove them first or use --remove-ports\n",
			wantCode: 1,
			wantReqs: []string{"POST /api/v1/bridge/down"},
		},
		{
			name:     "API error",
			args:     []string{"bridge", "up"},
			routes:   map[string]string{"POST /api/v1/bridge/up": permErr},
			wantErr:  "Error: bridge operation failed: create bridge: Operation not permitted\n",
			wantCode: 1,
			wantReqs: []string{"POST /api/v1/bridge/up"},
		},
		{
			name:     "malformed response",
			args:     []string{"bridge", "status"},
			routes:   map[string]string{"GET /api/v1/bridge": `{"success":true}`},
			wantErr:  "Error: malformed response from outcalld: success response without \"data\"\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/bridge"},
		},
		{
			name:     "daemon down",
			args:     []string{"bridge", "status", "--socket", "$MISSING"},
			wantErr:  "cannot connect to outcalld at $MISSING — is it running?\n",
			wantCode: 1,
		},
		{
			name:     "socket before the subcommand",
			args:     []string{"--socket", "$SOCK", "bridge", "up"},
			routes:   map[string]string{"POST /api/v1/bridge/up": ok},
			wantOut:  "Bridge is up.\n",
			wantReqs: []string{"POST /api/v1/bridge/up"},
		},
		{
			name:     "socket between group and subcommand",
			args:     []string{"bridge", "--socket=$SOCK", "down"},
			routes:   map[string]string{"POST /api/v1/bridge/down": ok},
			wantOut:  "Bridge is down.\n",
			wantReqs: []string{"POST /api/v1/bridge/down"},
		},
		{
			name:     "socket after the subcommand",
			args:     []string{"bridge", "up", "--socket", "$SOCK"},
			routes:   map[string]string{"POST /api/v1/bridge/up": ok},
			wantOut:  "Bridge is up.\n",
			wantReqs: []string{"POST /api/v1/bridge/up"},
		},

		// endpoint
		{
			name: "endpoint add",
			args: []string{"endpoint", "add", "--name", "web", "--interface", "veth-web", "--ip", "10.200.0.2", "--mac", "02-00-00-00-00-0A"},
			routes: map[string]string{"POST /api/v1/endpoints": `{"success":true,"data":{"name":"web","interface":"veth-web",` +
				`"ip":"10.200.0.2","mac":"02:00:00:00:00:0a","identity":7,"ifindex":9,"attached":true}}`},
			wantOut:  "Endpoint web added (identity 7, interface veth-web).\n",
			wantReqs: []string{`POST /api/v1/endpoints {"name":"web","interface":"veth-web","ip":"10.200.0.2","mac":"02:00:00:00:00:0a"}`},
		},
		{
			name:     "endpoint add API error",
			args:     []string{"endpoint", "add", "--name", "web", "--interface", "veth-web", "--ip", "10.200.0.2", "--mac", "02:00:00:00:00:01"},
			routes:   map[string]string{"POST /api/v1/endpoints": `{"success":false,"error":"endpoint \"web\" already exists"}`},
			wantErr:  "Error: endpoint \"web\" already exists\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/endpoints {"name":"web","interface":"veth-web","ip":"10.200.0.2","mac":"02:00:00:00:00:01"}`},
		},
		{
			name:     "endpoint add without flags",
			args:     []string{"endpoint", "add"},
			wantErr:  "Error: missing required flags --name, --interface, --ip, --mac\n",
			wantCode: 2,
		},
		{
			name:     "endpoint add without mac",
			args:     []string{"endpoint", "add", "--name", "web", "--interface", "veth-web", "--ip", "10.200.0.2"},
			wantErr:  "Error: missing required flag --mac\n",
			wantCode: 2,
		},
		{
			name:     "endpoint add with IPv6",
			args:     []string{"endpoint", "add", "--name", "web", "--interface", "veth-web", "--ip", "fd00::2", "--mac", "02:00:00:00:00:01"},
			wantErr:  "Error: invalid --ip \"fd00::2\": must be an IPv4 address\n",
			wantCode: 2,
		},
		{
			name:     "endpoint add with IPv4-mapped IPv6",
			args:     []string{"endpoint", "add", "--name", "web", "--interface", "veth-web", "--ip", "::ffff:10.200.0.2", "--mac", "02:00:00:00:00:01"},
			wantErr:  "Error: invalid --ip \"::ffff:10.200.0.2\": must be an IPv4 address\n",
			wantCode: 2,
		},
		{
			name:     "endpoint add with bad MAC",
			args:     []string{"endpoint", "add", "--name", "web", "--interface", "veth-web", "--ip", "10.200.0.2", "--mac", "zz:00"},
			wantErr:  "Error: invalid --mac \"zz:00\": must be a MAC address like 02:00:00:00:00:01\n",
			wantCode: 2,
		},
		{
			name:     "endpoint add with EUI-64",
			args:     []string{"endpoint", "add", "--name", "web", "--interface", "veth-web", "--ip", "10.200.0.2", "--mac", "02:00:00:00:00:00:00:01"},
			wantErr:  "Error: invalid --mac \"02:00:00:00:00:00:00:01\": must be a MAC address like 02:00:00:00:00:01\n",
			wantCode: 2,
		},
		{
			name:     "endpoint add with unknown flag",
			args:     []string{"endpoint", "add", "--bogus"},
			wantErr:  "Error: unknown flag: --bogus\n",
			wantCode: 2,
		},
		{
			name: "endpoint list",
			args: []string{"endpoint", "list"},
			routes: map[string]string{"GET /api/v1/endpoints": `{"success":true,"data":[` +
				`{"name":"web","interface":"veth-web","ip":"10.200.0.2","mac":"02:00:00:00:00:01","identity":7,"ifindex":9,"attached":true},` +
				`{"name":"db-server","interface":"veth-db","ip":"10.200.0.10","mac":"02:00:00:00:00:0a","identity":12,"ifindex":11,"attached":false}]}`},
			wantOut: "" +
				"NAME       IDENTITY  INTERFACE  IP           MAC                ATTACHED\n" +
				"web        7         veth-web   10.200.0.2   02:00:00:00:00:01  yes\n" +
				"db-server  12        veth-db    10.200.0.10  02:00:00:00:00:0a  no\n",
			wantReqs: []string{"GET /api/v1/endpoints"},
		},
		{
			name:     "endpoint list empty",
			args:     []string{"endpoint", "list"},
			routes:   map[string]string{"GET /api/v1/endpoints": `{"success":true,"data":[]}`},
			wantOut:  "No endpoints.\n",
			wantReqs: []string{"GET /api/v1/endpoints"},
		},
		{
			name:     "endpoint list null",
			args:     []string{"endpoint", "list"},
			routes:   map[string]string{"GET /api/v1/endpoints": `{"success":true,"data":null}`},
			wantOut:  "No endpoints.\n",
			wantReqs: []string{"GET /api/v1/endpoints"},
		},
		{
			name:     "endpoint remove escapes the name",
			args:     []string{"endpoint", "remove", "a b/c"},
			routes:   map[string]string{"DELETE /api/v1/endpoints/a%20b%2Fc": ok},
			wantOut:  "Endpoint a b/c removed.\n",
			wantReqs: []string{"DELETE /api/v1/endpoints/a%20b%2Fc"},
		},
		{
			name:     "endpoint remove without name",
			args:     []string{"endpoint", "remove"},
			wantErr:  "Error: accepts 1 arg(s), received 0\n",
			wantCode: 2,
		},
		{
			name:     "endpoint remove with empty name",
			args:     []string{"endpoint", "remove", ""},
			wantErr:  "Error: endpoint name must not be empty\n",
			wantCode: 2,
		},

		// grant
		{
			name:     "grant add with everything",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--proto", "tcp", "--port", "443", "--ttl", "60"},
			routes:   map[string]string{"POST /api/v1/rule/allow": activeRule},
			wantOut:  "Granted web -> 203.0.113.10 tcp/443 for 60s.\n",
			wantReqs: []string{`POST /api/v1/rule/allow {"container":"web","destination":"203.0.113.10","protocol":"tcp","port":443,"expires_in_secs":60}`},
		},
		{
			name:     "grant add destination only",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10"},
			routes:   map[string]string{"POST /api/v1/rule/allow": activeRule},
			wantOut:  "Granted web -> 203.0.113.10.\n",
			wantReqs: []string{`POST /api/v1/rule/allow {"container":"web","destination":"203.0.113.10"}`},
		},
		{
			name:     "grant add protocol without port",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--proto", "udp", "--ttl", "86400"},
			routes:   map[string]string{"POST /api/v1/rule/allow": activeRule},
			wantOut:  "Granted web -> 203.0.113.10 udp for 86400s.\n",
			wantReqs: []string{`POST /api/v1/rule/allow {"container":"web","destination":"203.0.113.10","protocol":"udp","expires_in_secs":86400}`},
		},
		{
			name:     "grant add API error",
			args:     []string{"grant", "add", "--endpoint", "nobody", "--dst", "203.0.113.10"},
			routes:   map[string]string{"POST /api/v1/rule/allow": `{"success":false,"error":"unknown endpoint 'nobody'"}`},
			wantErr:  "Error: unknown endpoint 'nobody'\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/rule/allow {"container":"nobody","destination":"203.0.113.10"}`},
		},
		{
			name:     "grant add without flags",
			args:     []string{"grant", "add"},
			wantErr:  "Error: missing required flags --endpoint, --dst\n",
			wantCode: 2,
		},
		{
			name:     "grant add with hostname",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "Example.com", "--proto", "tcp", "--port", "443"},
			routes:   map[string]string{"POST /api/v1/rule/allow": activeRule},
			wantOut:  "Granted web -> example.com tcp/443.\n",
			wantReqs: []string{`POST /api/v1/rule/allow {"container":"web","destination":"example.com","protocol":"tcp","port":443}`},
		},
		{
			name:     "grant add with a CIDR",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.0/24", "--ttl", "30"},
			routes:   map[string]string{"POST /api/v1/rule/allow": activeRule},
			wantOut:  "Granted web -> 203.0.113.0/24 for 30s.\n",
			wantReqs: []string{`POST /api/v1/rule/allow {"container":"web","destination":"203.0.113.0/24","expires_in_secs":30}`},
		},
		{
			name:     "grant add with a CIDR not in canonical form",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "192.168.0.1/24"},
			wantErr:  "Error: invalid destination '192.168.0.1/24': CIDR must be in canonical form (192.168.0.0/24)\n",
			wantCode: 2,
		},
		{
			name:     "grant add with an IPv6 address",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "2001:db8::1"},
			wantErr:  "Error: invalid destination '2001:db8::1': only IPv4 destinations are supported\n",
			wantCode: 2,
		},
		{
			name:     "grant add with something that is no destination",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "10.0.0"},
			wantErr:  "Error: invalid destination '10.0.0': not an IPv4 address, CIDR or host name\n",
			wantCode: 2,
		},
		{
			name:     "grant remove by host name",
			args:     []string{"grant", "remove", "--endpoint", "web", "--dst", "pypi.org"},
			routes:   map[string]string{"POST /api/v1/rule/revoke": ok},
			wantOut:  "Revoked web -> pypi.org.\n",
			wantReqs: []string{`POST /api/v1/rule/revoke {"container":"web","destination":"pypi.org"}`},
		},
		{
			name:     "grant add with bad protocol",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--proto", "icmp"},
			wantErr:  "Error: invalid protocol 'icmp': must be 'tcp' or 'udp'\n",
			wantCode: 2,
		},
		{
			name:     "grant add with port but no protocol",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--port", "443"},
			wantErr:  "Error: a destination port requires protocol 'tcp' or 'udp'\n",
			wantCode: 2,
		},
		{
			name:     "grant add with port 0",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--proto", "tcp", "--port", "0"},
			wantErr:  "Error: invalid --port 0: must be between 1 and 65535\n",
			wantCode: 2,
		},
		{
			name:     "grant add with port out of range",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--proto", "tcp", "--port", "65536"},
			wantErr:  "Error: invalid argument \"65536\" for \"--port\" flag: strconv.ParseUint: parsing \"65536\": value out of range\n",
			wantCode: 2,
		},
		{
			name:     "grant add with ttl 0",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--ttl", "0"},
			wantErr:  "Error: expires_in_secs must be between 1 and 86400 seconds\n",
			wantCode: 2,
		},
		{
			name:     "grant add with ttl too long",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--ttl", "86401"},
			wantErr:  "Error: expires_in_secs must be between 1 and 86400 seconds\n",
			wantCode: 2,
		},
		{
			name:     "grant add with negative ttl",
			args:     []string{"grant", "add", "--endpoint", "web", "--dst", "203.0.113.10", "--ttl=-5"},
			wantErr:  "Error: expires_in_secs must be between 1 and 86400 seconds\n",
			wantCode: 2,
		},
		{
			name:     "grant remove",
			args:     []string{"grant", "remove", "--endpoint", "web", "--dst", "203.0.113.10", "--proto", "tcp", "--port", "443"},
			routes:   map[string]string{"POST /api/v1/rule/revoke": ok},
			wantOut:  "Revoked web -> 203.0.113.10 tcp/443.\n",
			wantReqs: []string{`POST /api/v1/rule/revoke {"container":"web","destination":"203.0.113.10","protocol":"tcp","port":443}`},
		},
		{
			name:     "grant remove destination only",
			args:     []string{"grant", "remove", "--endpoint", "web", "--dst", "203.0.113.10"},
			routes:   map[string]string{"POST /api/v1/rule/revoke": ok},
			wantOut:  "Revoked web -> 203.0.113.10.\n",
			wantReqs: []string{`POST /api/v1/rule/revoke {"container":"web","destination":"203.0.113.10"}`},
		},
		{
			name:     "grant remove with port but no protocol",
			args:     []string{"grant", "remove", "--endpoint", "web", "--dst", "203.0.113.10", "--port", "53"},
			wantErr:  "Error: a destination port requires protocol 'tcp' or 'udp'\n",
			wantCode: 2,
		},
		{
			name:     "grant remove has no ttl",
			args:     []string{"grant", "remove", "--endpoint", "web", "--dst", "203.0.113.10", "--ttl", "5"},
			wantErr:  "Error: unknown flag: --ttl\n",
			wantCode: 2,
		},
		{
			name: "grant list",
			args: []string{"grant", "list"},
			routes: map[string]string{"GET /api/v1/rules/active": `{"success":true,"data":[` +
				`{"container":"web","src_ip":"10.200.0.2","destination":"203.0.113.10","port":443,"protocol":"tcp","expires_in_secs":59,"source":"dns","rule":"allow-pypi"},` +
				`{"container":"db-server","src_ip":"10.200.0.10","destination":"198.51.100.7","port":null,"protocol":null,"source":"operator"}]}`},
			wantOut: "" +
				"ENDPOINT   SRC          DESTINATION   PROTO  PORT  EXPIRES  SOURCE\n" +
				"web        10.200.0.2   203.0.113.10  tcp    443   59s      dns (allow-pypi)\n" +
				"db-server  10.200.0.10  198.51.100.7  -      -     -        operator\n",
			wantReqs: []string{"GET /api/v1/rules/active"},
		},
		{
			name:     "grant list empty",
			args:     []string{"grant", "list"},
			routes:   map[string]string{"GET /api/v1/rules/active": `{"success":true,"data":[]}`},
			wantOut:  "No grants.\n",
			wantReqs: []string{"GET /api/v1/rules/active"},
		},
		{
			name:     "grant flush",
			args:     []string{"grant", "flush"},
			routes:   map[string]string{"POST /api/v1/rules/flush": `{"success":true,"data":{"removed":3}}`},
			wantOut:  "Removed 3 grants.\n",
			wantReqs: []string{"POST /api/v1/rules/flush"},
		},

		// datapath, version, usage
		{
			name: "datapath counters",
			args: []string{"datapath", "counters"},
			routes: map[string]string{"GET /api/v1/datapath/counters": `{"success":true,"data":[` +
				`{"verdict":"allow","reason":"grant","packets":120,"bytes":98304},` +
				`{"verdict":"drop","reason":"no_rule","packets":7,"bytes":420}]}`},
			wantOut: "" +
				"VERDICT  REASON   PACKETS  BYTES\n" +
				"allow    grant    120      98304\n" +
				"drop     no_rule  7        420\n",
			wantReqs: []string{"GET /api/v1/datapath/counters"},
		},
		{
			name:    "version",
			args:    []string{"version"},
			wantOut: "outcall dev\n",
		},
		{
			name:     "unknown command",
			args:     []string{"frobnicate"},
			wantErr:  "Error: unknown command \"frobnicate\" for \"outcall\"\n",
			wantCode: 2,
		},
		{
			name:     "unknown subcommand",
			args:     []string{"bridge", "sideways"},
			wantErr:  "Error: unknown command \"sideways\" for \"outcall bridge\"\n",
			wantCode: 2,
		},
		{
			name:     "extra argument",
			args:     []string{"bridge", "status", "now"},
			wantErr:  "Error: unknown command \"now\" for \"outcall bridge status\"\n",
			wantCode: 2,
		},
	})
}

const activeRule = `{"success":true,"data":{"container":"web","src_ip":"10.200.0.2","destination":"203.0.113.10","port":443,"protocol":"tcp","expires_in_secs":60}}`
