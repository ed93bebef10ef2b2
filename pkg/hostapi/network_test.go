package hostapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
)

// fullName is what the daemon makes of a requested suffix.
func fullName(suffix *string) string {
	if suffix == nil {
		return api.DefaultNetworkName
	}
	return api.NetworkPrefix + *suffix
}

func (f *fakeService) CreateNetwork(_ context.Context, req api.NetworkCreateRequest) (api.NetworkCreateResult, error) {
	f.record("CreateNetwork", req)
	if f.empty {
		return api.NetworkCreateResult{NetworkID: "a1b2c3d4", Name: fullName(req.Name)}, f.err
	}
	return api.NetworkCreateResult{NetworkID: "a1b2c3d4", Name: fullName(req.Name), Created: true, Subnet: "10.200.1.0/24"}, f.err
}

// Network answers a network that does not exist when empty, its containers
// left nil as a Service may leave them.
func (f *fakeService) Network(_ context.Context, name *string) (api.NetworkStatus, error) {
	f.record("Network", name)
	if f.empty {
		return api.NetworkStatus{Name: fullName(name)}, f.err
	}
	return api.NetworkStatus{Exists: true, NetworkID: ptr("a1b2c3d4"), Name: fullName(name), Subnet: ptr("10.200.0.0/24"),
		Gateway: ptr("10.200.0.1"), Bridge: "outcall0", Containers: []api.NetworkContainer{{Name: "my-agent", IPv4Address: "10.200.0.2"}}}, f.err
}

func (f *fakeService) Networks(context.Context) ([]api.NetworkStatus, error) {
	f.record("Networks")
	if f.empty {
		return nil, f.err
	}
	f.networks = []api.NetworkStatus{
		{Exists: true, NetworkID: ptr("a1"), Name: "outcall-default", Subnet: ptr("10.200.0.0/24"), Gateway: ptr("10.200.0.1"),
			Containers: []api.NetworkContainer{{Name: "my-agent", IPv4Address: "10.200.0.2"}}},
		{Exists: true, NetworkID: ptr("b2"), Name: "outcall-staging", Subnet: ptr("10.200.1.0/24"), Gateway: ptr("10.200.1.1"), Bridge: "outcall-br1"},
	}
	return f.networks, f.err
}

func (f *fakeService) DestroyNetwork(_ context.Context, req api.NetworkDestroyRequest) (api.NetworkDestroyResult, error) {
	f.record("DestroyNetwork", req)
	return api.NetworkDestroyResult{Name: fullName(req.Name), Destroyed: !f.empty}, f.err
}

func (f *fakeService) NetworkConfig(context.Context) (api.NetworkConfig, error) {
	f.record("NetworkConfig")
	return api.NetworkConfig{SubnetBlock: "10.201.0.0/16"}, f.err
}

func TestNetworkRoutes(t *testing.T) {
	const (
		defaultStatus = `{"exists":true,"network_id":"a1b2c3d4","name":"outcall-default","subnet":"10.200.0.0/24","gateway":"10.200.0.1",` +
			`"bridge":"outcall0","containers":[{"name":"my-agent","ipv4_address":"10.200.0.2"}]}`
		bridgeDown = `bridge is not up — run "outcall bridge up" first`
		connected  = `cannot destroy network \"outcall-staging\": 2 containers still connected: my-agent, other-agent`
	)
	tests := []struct {
		name, method, path, body string
		empty                    bool
		err                      error
		status                   int
		want                     string // the exact response body
		wantCall                 string // the exact Service call; "" means none
	}{
		// create
		{name: "create without body is the default network", method: "POST", path: "/api/v1/network/create", status: 200,
			want:     `{"success":true,"data":{"network_id":"a1b2c3d4","name":"outcall-default","created":true,"subnet":"10.200.1.0/24"}}`,
			wantCall: `CreateNetwork {"name":null,"subnet":null,"gateway":null}`},
		{name: "create with empty object", method: "POST", path: "/api/v1/network/create", body: `{}`, status: 200,
			want:     `{"success":true,"data":{"network_id":"a1b2c3d4","name":"outcall-default","created":true,"subnet":"10.200.1.0/24"}}`,
			wantCall: `CreateNetwork {"name":null,"subnet":null,"gateway":null}`},
		{name: "create with null", method: "POST", path: "/api/v1/network/create", body: `null`, status: 200,
			want:     `{"success":true,"data":{"network_id":"a1b2c3d4","name":"outcall-default","created":true,"subnet":"10.200.1.0/24"}}`,
			wantCall: `CreateNetwork {"name":null,"subnet":null,"gateway":null}`},
		{name: "create with every field", method: "POST", path: "/api/v1/network/create",
			body: `{"name":"staging","subnet":"10.200.5.0/24","gateway":"10.200.5.1"}`, status: 200,
			want:     `{"success":true,"data":{"network_id":"a1b2c3d4","name":"outcall-staging","created":true,"subnet":"10.200.1.0/24"}}`,
			wantCall: `CreateNetwork {"name":"staging","subnet":"10.200.5.0/24","gateway":"10.200.5.1"}`},
		{name: "create keeps an empty name apart from none", method: "POST", path: "/api/v1/network/create", body: `{"name":""}`,
			err: apikit.Errorf(apikit.ErrInvalid, `invalid network name "": must be 1-64 characters`), status: 400,
			want:     `{"success":false,"error":"invalid network name \"\": must be 1-64 characters"}`,
			wantCall: `CreateNetwork {"name":"","subnet":null,"gateway":null}`},
		{name: "create that already exists", method: "POST", path: "/api/v1/network/create", empty: true, status: 200,
			want:     `{"success":true,"data":{"network_id":"a1b2c3d4","name":"outcall-default","created":false}}`,
			wantCall: `CreateNetwork {"name":null,"subnet":null,"gateway":null}`},
		{name: "create unknown field", method: "POST", path: "/api/v1/network/create", body: `{"nmae":"staging"}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"nmae\""}`},
		{name: "create trailing data", method: "POST", path: "/api/v1/network/create", body: `{} {}`, status: 400,
			want: `{"success":false,"error":"invalid request body: trailing data after JSON object"}`},
		{name: "create with the bridge down", method: "POST", path: "/api/v1/network/create",
			err: apikit.Errorf(apikit.ErrBridgeDown, "%s", bridgeDown), status: 409,
			want:     `{"success":false,"error":"bridge is not up — run \"outcall bridge up\" first"}`,
			wantCall: `CreateNetwork {"name":null,"subnet":null,"gateway":null}`},
		{name: "create without docker", method: "POST", path: "/api/v1/network/create", body: `{"name":"staging"}`,
			err: apikit.Errorf(apikit.ErrUnavailable, "docker unavailable: dial unix /var/run/docker.sock: connect: no such file or directory"), status: 503,
			want:     `{"success":false,"error":"docker unavailable: dial unix /var/run/docker.sock: connect: no such file or directory"}`,
			wantCall: `CreateNetwork {"name":"staging","subnet":null,"gateway":null}`},
		{name: "create is POST only", method: "GET", path: "/api/v1/network/create", status: 404,
			want: `{"success":false,"error":"no route for GET /api/v1/network/create"}`},

		// status
		{name: "status without name is the default network", method: "GET", path: "/api/v1/network", status: 200,
			want: `{"success":true,"data":` + defaultStatus + `}`, wantCall: `Network null`},
		{name: "status name reaches the service", method: "GET", path: "/api/v1/network?name=staging", status: 200,
			want: `{"success":true,"data":{"exists":true,"network_id":"a1b2c3d4","name":"outcall-staging","subnet":"10.200.0.0/24","gateway":"10.200.0.1",` +
				`"bridge":"outcall0","containers":[{"name":"my-agent","ipv4_address":"10.200.0.2"}]}}`,
			wantCall: `Network "staging"`},
		{name: "status name is unescaped", method: "GET", path: "/api/v1/network?name=a%2Fb+c", empty: true, status: 200,
			want:     `{"success":true,"data":{"exists":false,"network_id":null,"name":"outcall-a/b c","subnet":null,"gateway":null,"containers":[]}}`,
			wantCall: `Network "a/b c"`},
		{name: "status of a missing network keeps nulls and lists no containers", method: "GET", path: "/api/v1/network", empty: true, status: 200,
			want:     `{"success":true,"data":{"exists":false,"network_id":null,"name":"outcall-default","subnet":null,"gateway":null,"containers":[]}}`,
			wantCall: `Network null`},
		{name: "status empty name is not the default", method: "GET", path: "/api/v1/network?name=",
			err: apikit.Errorf(apikit.ErrInvalid, `invalid network name "": must be 1-64 characters`), status: 400,
			want:     `{"success":false,"error":"invalid network name \"\": must be 1-64 characters"}`,
			wantCall: `Network ""`},
		{name: "status other parameters are ignored", method: "GET", path: "/api/v1/network?verbose=1", status: 200,
			want: `{"success":true,"data":` + defaultStatus + `}`, wantCall: `Network null`},
		{name: "status name twice", method: "GET", path: "/api/v1/network?name=a&name=b", status: 400,
			want: `{"success":false,"error":"invalid query parameter name: given 2 times, want at most once"}`},
		{name: "status malformed query", method: "GET", path: "/api/v1/network?name=%zz", status: 400,
			want: `{"success":false,"error":"invalid query: invalid URL escape \"%zz\""}`},
		{name: "status of a lookalike", method: "GET", path: "/api/v1/network?name=staging",
			err: apikit.Errorf(apikit.ErrConflict, `network "outcall-staging" is not Outcall's: driver "macvlan", want "bridge"`), status: 409,
			want:     `{"success":false,"error":"network \"outcall-staging\" is not Outcall's: driver \"macvlan\", want \"bridge\""}`,
			wantCall: `Network "staging"`},
		{name: "status is GET only", method: "POST", path: "/api/v1/network", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/network"}`},

		// list
		{name: "list", method: "GET", path: "/api/v1/networks", status: 200,
			want: `{"success":true,"data":[` +
				`{"exists":true,"network_id":"a1","name":"outcall-default","subnet":"10.200.0.0/24","gateway":"10.200.0.1","containers":[{"name":"my-agent","ipv4_address":"10.200.0.2"}]},` +
				`{"exists":true,"network_id":"b2","name":"outcall-staging","subnet":"10.200.1.0/24","gateway":"10.200.1.1","bridge":"outcall-br1","containers":[]}]}`,
			wantCall: "Networks"},
		{name: "no networks is an empty list", method: "GET", path: "/api/v1/networks", empty: true, status: 200,
			want: `{"success":true,"data":[]}`, wantCall: "Networks"},
		{name: "list failure", method: "GET", path: "/api/v1/networks", err: errors.New("docker: list networks: EOF"), status: 500,
			want: `{"success":false,"error":"docker: list networks: EOF"}`, wantCall: "Networks"},

		// destroy
		{name: "destroy without body is the default network", method: "POST", path: "/api/v1/network/destroy", status: 200,
			want: `{"success":true,"data":{"name":"outcall-default","destroyed":true}}`, wantCall: `DestroyNetwork {"name":null}`},
		{name: "destroy named", method: "POST", path: "/api/v1/network/destroy", body: `{"name":"staging"}`, status: 200,
			want: `{"success":true,"data":{"name":"outcall-staging","destroyed":true}}`, wantCall: `DestroyNetwork {"name":"staging"}`},
		{name: "destroy of a missing network", method: "POST", path: "/api/v1/network/destroy", body: `{"name":"staging"}`, empty: true, status: 200,
			want: `{"success":true,"data":{"name":"outcall-staging","destroyed":false}}`, wantCall: `DestroyNetwork {"name":"staging"}`},
		{name: "destroy with containers connected", method: "POST", path: "/api/v1/network/destroy", body: `{"name":"staging"}`,
			err: apikit.Errorf(apikit.ErrConflict, `cannot destroy network "outcall-staging": 2 containers still connected: my-agent, other-agent`), status: 409,
			want: `{"success":false,"error":"` + connected + `"}`, wantCall: `DestroyNetwork {"name":"staging"}`},
		{name: "destroy unknown field", method: "POST", path: "/api/v1/network/destroy", body: `{"name":"staging","force":true}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"force\""}`},
		{name: "destroy not JSON", method: "POST", path: "/api/v1/network/destroy", body: `name=staging`, status: 400,
			want: `{"success":false,"error":"invalid request body: invalid character 'a' in literal null (expecting 'u')"}`},

		// config
		{name: "config", method: "GET", path: "/api/v1/network/config", status: 200,
			want: `{"success":true,"data":{"subnet_block":"10.201.0.0/16"}}`, wantCall: "NetworkConfig"},
		{name: "config is GET only", method: "POST", path: "/api/v1/network/config", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/network/config"}`},
		{name: "no other route under network", method: "GET", path: "/api/v1/network/staging", status: 404,
			want: `{"success":false,"error":"no route for GET /api/v1/network/staging"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{empty: tt.empty, err: tt.err}
			rec := httptest.NewRecorder()
			Handler(svc, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			if got := strings.TrimSuffix(rec.Body.String(), "\n"); got != tt.want {
				t.Errorf("body:\n got %s\nwant %s", got, tt.want)
			}
			if got := strings.Join(svc.calls, "\n"); got != tt.wantCall {
				t.Errorf("service saw %q, want %q", got, tt.wantCall)
			}
			for _, st := range svc.networks {
				if st.Name == "outcall-staging" && st.Containers != nil {
					t.Error("handler wrote into the Service's networks")
				}
			}
		})
	}
}
