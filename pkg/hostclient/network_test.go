package hostclient

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

func TestNetworkCalls(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		call     func(*Client) (any, error)
		response string // the envelope's data
		want     any
		wantReq  string
	}{
		{
			name:     "create the default network",
			call:     func(c *Client) (any, error) { return c.CreateNetwork(ctx, api.NetworkCreateRequest{}) },
			response: `{"network_id":"a1b2c3d4","name":"outcall-default","created":true,"subnet":"10.200.0.0/24"}`,
			want:     api.NetworkCreateResult{NetworkID: "a1b2c3d4", Name: "outcall-default", Created: true, Subnet: "10.200.0.0/24"},
			wantReq: "POST /api/v1/network/create HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n" +
				`{"name":null,"subnet":null,"gateway":null}`,
		},
		{
			name: "create with every field",
			call: func(c *Client) (any, error) {
				return c.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("prod"), Subnet: ptr("10.200.50.0/24"), Gateway: ptr("10.200.50.1")})
			},
			response: `{"network_id":"e5f6","name":"outcall-prod","created":false}`,
			want:     api.NetworkCreateResult{NetworkID: "e5f6", Name: "outcall-prod"},
			wantReq: "POST /api/v1/network/create HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 65\r\n\r\n" +
				`{"name":"prod","subnet":"10.200.50.0/24","gateway":"10.200.50.1"}`,
		},
		{
			name: "status of the default network sends no name",
			call: func(c *Client) (any, error) { return c.Network(ctx, "") },
			response: `{"exists":true,"network_id":"a1b2c3d4","name":"outcall-default","subnet":"10.200.0.0/24","gateway":"10.200.0.1",` +
				`"bridge":"outcall0","containers":[{"name":"my-agent","ipv4_address":"10.200.0.2"}]}`,
			want: api.NetworkStatus{Exists: true, NetworkID: ptr("a1b2c3d4"), Name: "outcall-default", Subnet: ptr("10.200.0.0/24"),
				Gateway: ptr("10.200.0.1"), Bridge: "outcall0", Containers: []api.NetworkContainer{{Name: "my-agent", IPv4Address: "10.200.0.2"}}},
			wantReq: "GET /api/v1/network HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "status of a missing network",
			call:     func(c *Client) (any, error) { return c.Network(ctx, "staging") },
			response: `{"exists":false,"network_id":null,"name":"outcall-staging","subnet":null,"gateway":null,"containers":[]}`,
			want:     api.NetworkStatus{Name: "outcall-staging", Containers: []api.NetworkContainer{}},
			wantReq:  "GET /api/v1/network?name=staging HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "status name is escaped",
			call:     func(c *Client) (any, error) { return c.Network(ctx, "a&name=b c#d") },
			response: `{"exists":false,"network_id":null,"name":"outcall-a&name=b c#d","subnet":null,"gateway":null,"containers":[]}`,
			want:     api.NetworkStatus{Name: "outcall-a&name=b c#d", Containers: []api.NetworkContainer{}},
			wantReq:  "GET /api/v1/network?name=a%26name%3Db+c%23d HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "list",
			call: func(c *Client) (any, error) { return c.Networks(ctx) },
			response: `[{"exists":true,"network_id":"a1","name":"outcall-default","subnet":"10.200.0.0/24","gateway":"10.200.0.1","containers":[]},` +
				`{"exists":true,"network_id":"b2","name":"outcall-staging","subnet":"10.200.1.0/24","gateway":"10.200.1.1","bridge":"outcall-br1",` +
				`"containers":[{"name":"other-agent","ipv4_address":"10.200.1.2"}]}]`,
			want: []api.NetworkStatus{
				{Exists: true, NetworkID: ptr("a1"), Name: "outcall-default", Subnet: ptr("10.200.0.0/24"), Gateway: ptr("10.200.0.1"),
					Containers: []api.NetworkContainer{}},
				{Exists: true, NetworkID: ptr("b2"), Name: "outcall-staging", Subnet: ptr("10.200.1.0/24"), Gateway: ptr("10.200.1.1"), Bridge: "outcall-br1",
					Containers: []api.NetworkContainer{{Name: "other-agent", IPv4Address: "10.200.1.2"}}},
			},
			wantReq: "GET /api/v1/networks HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "destroy the default network",
			call:     func(c *Client) (any, error) { return c.DestroyNetwork(ctx, api.NetworkDestroyRequest{}) },
			response: `{"name":"outcall-default","destroyed":true}`,
			want:     api.NetworkDestroyResult{Name: "outcall-default", Destroyed: true},
			wantReq: "POST /api/v1/network/destroy HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n" +
				`{"name":null}`,
		},
		{
			name: "destroy a missing network",
			call: func(c *Client) (any, error) {
				return c.DestroyNetwork(ctx, api.NetworkDestroyRequest{Name: ptr("staging")})
			},
			response: `{"name":"outcall-staging","destroyed":false}`,
			want:     api.NetworkDestroyResult{Name: "outcall-staging"},
			wantReq: "POST /api/v1/network/destroy HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n" +
				`{"name":"staging"}`,
		},
		{
			name:     "config",
			call:     func(c *Client) (any, error) { return c.NetworkConfig(ctx) },
			response: `{"subnet_block":"10.200.0.0/16"}`,
			want:     api.NetworkConfig{SubnetBlock: "10.200.0.0/16"},
			wantReq:  "GET /api/v1/network/config HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, reply(`{"success":true,"data":`+tt.response+`}`))
			got, err := tt.call(New(f.path))
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if req := f.received(t); req != tt.wantReq {
				t.Errorf("request bytes:\n got %q\nwant %q", req, tt.wantReq)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

// TestNetworkAPIError: a refused destroy reaches the caller as the daemon's
// message, unchanged (S002-IF-004).
func TestNetworkAPIError(t *testing.T) {
	const msg = `cannot destroy network "outcall-staging": 2 containers still connected: my-agent, other-agent`
	f := startFake(t, reply(`{"success":false,"error":"cannot destroy network \"outcall-staging\": 2 containers still connected: my-agent, other-agent"}`))
	_, err := New(f.path).DestroyNetwork(context.Background(), api.NetworkDestroyRequest{Name: ptr("staging")})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Message != msg {
		t.Fatalf("err = %v (%T), want *APIError %q", err, err, msg)
	}
}
