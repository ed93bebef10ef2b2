package main

import (
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

const (
	createDefault = `POST /api/v1/network/create {"name":null,"subnet":null,"gateway":null}`
	createStaging = `POST /api/v1/network/create {"name":"staging","subnet":null,"gateway":null}`
	defaultStatus = `{"success":true,"data":{"exists":true,"network_id":"a1b2c3d4","name":"outcall-default","subnet":"10.200.0.0/24",` +
		`"gateway":"10.200.0.1","bridge":"outcall0","containers":[{"name":"my-agent","ipv4_address":"10.200.0.2"},{"name":"other-agent","ipv4_address":"10.200.0.3"}]}}`
	defaultStatusOut = "" +
		"Network:      outcall-default\n" +
		"Status:       active\n" +
		"Subnet:       10.200.0.0/24\n" +
		"Gateway:      10.200.0.1\n" +
		"Containers:   2\n" +
		"  my-agent         10.200.0.2\n" +
		"  other-agent      10.200.0.3\n"
)

// TestNetworkCLI runs S002-AS-001..014 and S002-IF-006 against a fake
// daemon: the requests the CLI sends, its output and exit code.
func TestNetworkCLI(t *testing.T) {
	runCases(t, []cliCase{
		// create
		{
			name:     "create the default network",
			args:     []string{"network", "create"},
			routes:   map[string]string{"POST /api/v1/network/create": `{"success":true,"data":{"network_id":"a1b2c3d4","name":"outcall-default","created":true,"subnet":"10.200.0.0/24"}}`},
			wantOut:  "Network \"outcall-default\" created.\n",
			wantReqs: []string{createDefault},
		},
		{
			name:     "create a named network shows its subnet",
			args:     []string{"network", "create", "--name", "staging"},
			routes:   map[string]string{"POST /api/v1/network/create": `{"success":true,"data":{"network_id":"e5f6","name":"outcall-staging","created":true,"subnet":"10.200.1.0/24"}}`},
			wantOut:  "Network \"outcall-staging\" created (10.200.1.0/24).\n",
			wantReqs: []string{createStaging},
		},
		{
			name:     "create a named network, the daemon not saying its subnet",
			args:     []string{"network", "create", "--name", "staging"},
			routes:   map[string]string{"POST /api/v1/network/create": `{"success":true,"data":{"network_id":"e5f6","name":"outcall-staging","created":true}}`},
			wantOut:  "Network \"outcall-staging\" created.\n",
			wantReqs: []string{createStaging},
		},
		{
			name:     "create with explicit subnet and gateway",
			args:     []string{"network", "create", "--name", "prod", "--subnet", "10.200.50.0/24", "--gateway", "10.200.50.1"},
			routes:   map[string]string{"POST /api/v1/network/create": `{"success":true,"data":{"network_id":"0a0b","name":"outcall-prod","created":true,"subnet":"10.200.50.0/24"}}`},
			wantOut:  "Network \"outcall-prod\" created (10.200.50.0/24).\n",
			wantReqs: []string{`POST /api/v1/network/create {"name":"prod","subnet":"10.200.50.0/24","gateway":"10.200.50.1"}`},
		},
		{
			name:     "create leaves the subnet for the daemon to check",
			args:     []string{"network", "create", "--name", "prod", "--subnet", "10.200.50.7/24"},
			routes:   map[string]string{"POST /api/v1/network/create": `{"success":false,"error":"invalid subnet \"10.200.50.7/24\": host bits set (want 10.200.50.0/24)"}`},
			wantErr:  "Error: invalid subnet \"10.200.50.7/24\": host bits set (want 10.200.50.0/24)\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/network/create {"name":"prod","subnet":"10.200.50.7/24","gateway":null}`},
		},
		{
			name:     "create that already exists",
			args:     []string{"network", "create"},
			routes:   map[string]string{"POST /api/v1/network/create": `{"success":true,"data":{"network_id":"a1b2c3d4","name":"outcall-default","created":false,"subnet":"10.200.0.0/24"}}`},
			wantOut:  "Network \"outcall-default\" already exists.\n",
			wantReqs: []string{createDefault},
		},
		{
			name:     "create with the bridge down",
			args:     []string{"network", "create"},
			routes:   map[string]string{"POST /api/v1/network/create": `{"success":false,"error":"bridge is not up — run \"outcall bridge up\" first"}`},
			wantErr:  "Error: bridge is not up — run \"outcall bridge up\" first\n",
			wantCode: 1,
			wantReqs: []string{createDefault},
		},
		{
			name:     "create of a lookalike",
			args:     []string{"network", "create", "--name", "staging"},
			routes:   map[string]string{"POST /api/v1/network/create": `{"success":false,"error":"network \"outcall-staging\" is not Outcall's: bridge \"docker1\", want \"outcall1\""}`},
			wantErr:  "Error: network \"outcall-staging\" is not Outcall's: bridge \"docker1\", want \"outcall1\"\n",
			wantCode: 1,
			wantReqs: []string{createStaging},
		},
		{
			name:     "create with an empty name",
			args:     []string{"network", "create", "--name", ""},
			wantErr:  "Error: invalid --name: must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "create with an empty subnet",
			args:     []string{"network", "create", "--subnet="},
			wantErr:  "Error: invalid --subnet: must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "create with a hostname gateway",
			args:     []string{"network", "create", "--gateway", "gw.example"},
			wantErr:  "Error: invalid --gateway \"gw.example\": must be an IPv4 address\n",
			wantCode: 2,
		},
		{
			name:     "create with an IPv6 gateway",
			args:     []string{"network", "create", "--gateway", "fd00::1"},
			wantErr:  "Error: invalid --gateway \"fd00::1\": must be an IPv4 address\n",
			wantCode: 2,
		},
		{
			name:     "create with an argument",
			args:     []string{"network", "create", "staging"},
			wantErr:  "Error: unknown command \"staging\" for \"outcall network create\"\n",
			wantCode: 2,
		},
		{
			name:     "create with the daemon down",
			args:     []string{"network", "create", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// status
		{
			name:     "status of the default network",
			args:     []string{"network", "status"},
			routes:   map[string]string{"GET /api/v1/network": defaultStatus},
			wantOut:  defaultStatusOut,
			wantReqs: []string{"GET /api/v1/network"},
		},
		{
			name: "status of a named network",
			args: []string{"network", "status", "--name", "staging"},
			routes: map[string]string{"GET /api/v1/network?name=staging": `{"success":true,"data":{"exists":true,"network_id":"e5f6","name":"outcall-staging",` +
				`"subnet":"10.200.1.0/24","gateway":"10.200.1.1","bridge":"outcall1","containers":[]}}`},
			wantOut:  "Network:      outcall-staging\nStatus:       active\nSubnet:       10.200.1.0/24\nGateway:      10.200.1.1\nContainers:   0\n",
			wantReqs: []string{"GET /api/v1/network?name=staging"},
		},
		{
			name:     "status of a missing network",
			args:     []string{"network", "status"},
			routes:   map[string]string{"GET /api/v1/network": `{"success":true,"data":{"exists":false,"network_id":null,"name":"outcall-default","subnet":null,"gateway":null,"containers":[]}}`},
			wantOut:  "Network \"outcall-default\" does not exist.\n",
			wantReqs: []string{"GET /api/v1/network"},
		},
		{
			name:     "status of a lookalike",
			args:     []string{"network", "status", "--name", "staging"},
			routes:   map[string]string{"GET /api/v1/network?name=staging": `{"success":false,"error":"network \"outcall-staging\" is not Outcall's: driver \"macvlan\", want \"bridge\""}`},
			wantErr:  "Error: network \"outcall-staging\" is not Outcall's: driver \"macvlan\", want \"bridge\"\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/network?name=staging"},
		},
		{
			name:     "status name is escaped",
			args:     []string{"network", "status", "--name", "a&name=b"},
			routes:   map[string]string{"GET /api/v1/network?name=a%26name%3Db": `{"success":false,"error":"invalid network name \"a&name=b\""}`},
			wantErr:  "Error: invalid network name \"a&name=b\"\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/network?name=a%26name%3Db"},
		},
		{
			name:     "status with an empty name",
			args:     []string{"network", "status", "--name="},
			wantErr:  "Error: invalid --name: must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "status with the daemon down",
			args:     []string{"network", "status", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// list
		{
			name: "list sorts by name",
			args: []string{"network", "list"},
			routes: map[string]string{"GET /api/v1/networks": `{"success":true,"data":[` +
				`{"exists":true,"network_id":"e5f6","name":"outcall-staging","subnet":"10.200.1.0/24","gateway":"10.200.1.1","containers":[]},` +
				`{"exists":true,"network_id":"a1b2","name":"outcall-default","subnet":"10.200.0.0/24","gateway":"10.200.0.1",` +
				`"containers":[{"name":"my-agent","ipv4_address":"10.200.0.2"},{"name":"other-agent","ipv4_address":"10.200.0.3"}]}]}`},
			wantOut: "" +
				"NAME               SUBNET           CONTAINERS\n" +
				"outcall-default    10.200.0.0/24    2\n" +
				"outcall-staging    10.200.1.0/24    0\n",
			wantReqs: []string{"GET /api/v1/networks"},
		},
		{
			name:     "list empty",
			args:     []string{"network", "list"},
			routes:   map[string]string{"GET /api/v1/networks": `{"success":true,"data":[]}`},
			wantOut:  "No networks.\n",
			wantReqs: []string{"GET /api/v1/networks"},
		},
		{
			name:     "list with the daemon down",
			args:     []string{"network", "list", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// destroy
		{
			name:     "destroy a named network",
			args:     []string{"network", "destroy", "--name", "staging"},
			routes:   map[string]string{"POST /api/v1/network/destroy": `{"success":true,"data":{"name":"outcall-staging","destroyed":true}}`},
			wantOut:  "Network \"outcall-staging\" destroyed.\n",
			wantReqs: []string{`POST /api/v1/network/destroy {"name":"staging"}`},
		},
		{
			name:     "destroy the default network",
			args:     []string{"network", "destroy"},
			routes:   map[string]string{"POST /api/v1/network/destroy": `{"success":true,"data":{"name":"outcall-default","destroyed":true}}`},
			wantOut:  "Network \"outcall-default\" destroyed.\n",
			wantReqs: []string{`POST /api/v1/network/destroy {"name":null}`},
		},
		{
			name:     "destroy with containers connected",
			args:     []string{"network", "destroy", "--name", "staging"},
			routes:   map[string]string{"POST /api/v1/network/destroy": `{"success":false,"error":"cannot destroy network \"outcall-staging\": 2 containers still connected: my-agent, other-agent"}`},
			wantErr:  "Error: cannot destroy network \"outcall-staging\": 2 containers still connected: my-agent, other-agent\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/network/destroy {"name":"staging"}`},
		},
		{
			name:     "destroy a missing network",
			args:     []string{"network", "destroy", "--name", "staging"},
			routes:   map[string]string{"POST /api/v1/network/destroy": `{"success":true,"data":{"name":"outcall-staging","destroyed":false}}`},
			wantOut:  "Network \"outcall-staging\" does not exist (nothing to destroy).\n",
			wantReqs: []string{`POST /api/v1/network/destroy {"name":"staging"}`},
		},
		{
			name:     "destroy with an empty name",
			args:     []string{"network", "destroy", "--name", ""},
			wantErr:  "Error: invalid --name: must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "destroy with the daemon down",
			args:     []string{"network", "destroy", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// the group
		{
			name:     "unknown network subcommand",
			args:     []string{"network", "inspect"},
			wantErr:  "Error: unknown command \"inspect\" for \"outcall network\"\n",
			wantCode: 2,
		},
		{
			name:     "list has no --name",
			args:     []string{"network", "list", "--name", "staging"},
			wantErr:  "Error: unknown flag: --name\n",
			wantCode: 2,
		},
	})
}

func TestFormatNetworkCreated(t *testing.T) {
	tests := []struct {
		name  string
		res   api.NetworkCreateResult
		named bool
		want  string
	}{
		{"default", api.NetworkCreateResult{Name: "outcall-default", Created: true, Subnet: "10.200.0.0/24"}, false,
			`Network "outcall-default" created.`},
		{"named", api.NetworkCreateResult{Name: "outcall-staging", Created: true, Subnet: "10.200.1.0/24"}, true,
			`Network "outcall-staging" created (10.200.1.0/24).`},
		{"named without subnet", api.NetworkCreateResult{Name: "outcall-staging", Created: true}, true,
			`Network "outcall-staging" created.`},
		{"default by name", api.NetworkCreateResult{Name: "outcall-default", Created: true, Subnet: "10.200.0.0/24"}, true,
			`Network "outcall-default" created (10.200.0.0/24).`},
		{"exists", api.NetworkCreateResult{Name: "outcall-default", Subnet: "10.200.0.0/24"}, false,
			`Network "outcall-default" already exists.`},
		{"named exists", api.NetworkCreateResult{Name: "outcall-staging", Subnet: "10.200.1.0/24"}, true,
			`Network "outcall-staging" already exists.`},
		{"control characters escaped", api.NetworkCreateResult{Name: "outcall-\x1b[2J", Created: true, Subnet: "10.0.0.0/24\u202e"}, true,
			`Network "outcall-\x1b[2J" created (10.0.0.0/24\u202e).`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatNetworkCreated(tt.res, tt.named); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestFormatNetworkStatus(t *testing.T) {
	tests := []struct {
		name string
		st   api.NetworkStatus
		want string
	}{
		{
			name: "two containers",
			st: api.NetworkStatus{Exists: true, NetworkID: new("a1b2"), Name: "outcall-default", Subnet: new("10.200.0.0/24"), Gateway: new("10.200.0.1"),
				Bridge: "outcall0", Containers: []api.NetworkContainer{{Name: "my-agent", IPv4Address: "10.200.0.2"}, {Name: "other-agent", IPv4Address: "10.200.0.3"}}},
			want: strings.TrimSuffix(defaultStatusOut, "\n"),
		},
		{
			name: "no containers",
			st:   api.NetworkStatus{Exists: true, Name: "outcall-staging", Subnet: new("10.200.1.0/24"), Gateway: new("10.200.1.1")},
			want: "Network:      outcall-staging\nStatus:       active\nSubnet:       10.200.1.0/24\nGateway:      10.200.1.1\nContainers:   0",
		},
		{
			name: "missing fields show a dash",
			st:   api.NetworkStatus{Exists: true, Name: "outcall-x", Containers: []api.NetworkContainer{{Name: "", IPv4Address: ""}}},
			want: "Network:      outcall-x\nStatus:       active\nSubnet:       -\nGateway:      -\nContainers:   1\n  -                -",
		},
		{
			name: "a long container name keeps a space",
			st: api.NetworkStatus{Exists: true, Name: "outcall-default", Subnet: new("10.200.0.0/24"), Gateway: new("10.200.0.1"),
				Containers: []api.NetworkContainer{{Name: "seventeen-chars-x", IPv4Address: "10.200.0.2"}, {Name: "sixteen-chars-xx", IPv4Address: "10.200.0.3"}}},
			want: "Network:      outcall-default\nStatus:       active\nSubnet:       10.200.0.0/24\nGateway:      10.200.0.1\nContainers:   2\n" +
				"  seventeen-chars-x 10.200.0.2\n  sixteen-chars-xx 10.200.0.3",
		},
		{
			name: "container names are made printable",
			st: api.NetworkStatus{Exists: true, Name: "outcall-default", Subnet: new("10.200.0.0/24"), Gateway: new("10.200.0.1"),
				Containers: []api.NetworkContainer{{Name: "evil\x1b]0;x\a", IPv4Address: "10.200.0.2"}}},
			want: "Network:      outcall-default\nStatus:       active\nSubnet:       10.200.0.0/24\nGateway:      10.200.0.1\nContainers:   1\n" +
				`  evil\x1b]0;x\a   10.200.0.2`,
		},
		{
			name: "bridge is not shown",
			st:   api.NetworkStatus{Exists: true, Name: "outcall-staging", Subnet: new("10.200.1.0/24"), Gateway: new("10.200.1.1"), Bridge: "outcall1"},
			want: "Network:      outcall-staging\nStatus:       active\nSubnet:       10.200.1.0/24\nGateway:      10.200.1.1\nContainers:   0",
		},
		{
			name: "missing",
			st:   api.NetworkStatus{Name: "outcall-default", Containers: []api.NetworkContainer{}},
			want: `Network "outcall-default" does not exist.`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatNetworkStatus(tt.st); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestFormatNetworkList(t *testing.T) {
	const header = "NAME               SUBNET           CONTAINERS"
	long := "outcall-" + strings.Repeat("x", 64)
	tests := []struct {
		name string
		nets []api.NetworkStatus
		want string
	}{
		{"none", nil, "No networks."},
		{"empty", []api.NetworkStatus{}, "No networks."},
		{
			name: "sorted by name",
			nets: []api.NetworkStatus{
				{Exists: true, Name: "outcall-staging", Subnet: new("10.200.1.0/24")},
				{Exists: true, Name: "outcall-default", Subnet: new("10.200.0.0/24"), Containers: make([]api.NetworkContainer, 2)},
				{Exists: true, Name: "outcall-prod", Subnet: new("10.200.50.0/24"), Containers: make([]api.NetworkContainer, 1)},
			},
			want: header + "\n" +
				"outcall-default    10.200.0.0/24    2\n" +
				"outcall-prod       10.200.50.0/24   1\n" +
				"outcall-staging    10.200.1.0/24    0",
		},
		{
			name: "long values keep a space",
			nets: []api.NetworkStatus{{Exists: true, Name: long, Subnet: new("192.168.100.0/24"), Containers: make([]api.NetworkContainer, 10)}},
			want: header + "\n" + long + " 192.168.100.0/24 10",
		},
		{
			name: "a missing subnet shows a dash",
			nets: []api.NetworkStatus{{Exists: true, Name: "outcall-x"}},
			want: header + "\n" + "outcall-x          -                0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before []string
			for _, n := range tt.nets {
				before = append(before, n.Name)
			}
			if got := formatNetworkList(tt.nets); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
			for i, n := range tt.nets {
				if n.Name != before[i] {
					t.Fatal("formatNetworkList reordered its argument")
				}
			}
		})
	}
}

func TestFormatNetworkDestroyed(t *testing.T) {
	tests := []struct {
		res  api.NetworkDestroyResult
		want string
	}{
		{api.NetworkDestroyResult{Name: "outcall-default", Destroyed: true}, `Network "outcall-default" destroyed.`},
		{api.NetworkDestroyResult{Name: "outcall-staging", Destroyed: true}, `Network "outcall-staging" destroyed.`},
		{api.NetworkDestroyResult{Name: "outcall-staging"}, `Network "outcall-staging" does not exist (nothing to destroy).`},
	}
	for _, tt := range tests {
		if got := formatNetworkDestroyed(tt.res); got != tt.want {
			t.Errorf("formatNetworkDestroyed(%+v) = %q, want %q", tt.res, got, tt.want)
		}
	}
}
