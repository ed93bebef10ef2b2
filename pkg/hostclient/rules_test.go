package hostclient

import (
	"context"
	"reflect"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

func TestRuleCalls(t *testing.T) {
	tests := []struct {
		name     string
		call     func(*Client) (any, error)
		response string // the envelope's data
		want     any
		wantReq  string
	}{
		{
			name: "evaluate",
			call: func(c *Client) (any, error) {
				return c.Evaluate(context.Background(), api.EvaluationContext{Agent: &api.AgentContext{Name: "a"}})
			},
			response: `{"decision":"block","matched_rule":null,"file":null,"logged":false}`,
			want:     api.EvaluateResult{Decision: api.DecisionBlock},
			wantReq: "POST /api/v1/rule/evaluate HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 34\r\n\r\n" +
				`{"context":{"agent":{"name":"a"}}}`,
		},
		{
			name:     "rules",
			call:     func(c *Client) (any, error) { return c.Rules(context.Background()) },
			response: `[{"id":"r","file":"00.yaml","action":"allow","condition_preview":"true","description":null,"priority":100,"level":"packet"}]`,
			want:     []api.RuleSummary{{ID: "r", File: "00.yaml", Action: api.ActionAllow, ConditionPreview: "true", Priority: 100, Level: api.LevelPacket}},
			wantReq:  "GET /api/v1/rules HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "rule id is escaped",
			call:     func(c *Client) (any, error) { return c.Rule(context.Background(), "a/b?c") },
			response: `{"id":"a/b?c","condition":"true","action":"block","log":true,"description":"d","priority":1,"file":"f.yaml","line":3,"level":"request","egress":null}`,
			want: api.RuleDetail{ID: "a/b?c", Condition: "true", Action: api.ActionBlock, Log: true, Description: ptr("d"), Priority: 1,
				File: "f.yaml", Line: 3, Level: api.LevelRequest},
			wantReq: "GET /api/v1/rule/a%2Fb%3Fc HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "reload",
			call:     func(c *Client) (any, error) { return c.ReloadRules(context.Background()) },
			response: `{"files_loaded":3,"rules_loaded":12,"packet_rules":4,"warnings":["w"]}`,
			want:     api.ReloadResult{FilesLoaded: 3, RulesLoaded: 12, PacketRules: 4, Warnings: []string{"w"}},
			wantReq:  "POST /api/v1/rules/reload HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "test expression",
			call: func(c *Client) (any, error) {
				return c.TestExpression(context.Background(), api.TestExpressionRequest{Expression: "true"})
			},
			response: `{"result":false,"error":"boom"}`,
			want:     api.TestExpressionResult{Error: ptr("boom")},
			wantReq: "POST /api/v1/rule/test HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 34\r\n\r\n" +
				`{"expression":"true","context":{}}`,
		},
		{
			name:     "requests",
			call:     func(c *Client) (any, error) { return c.RuleRequests(context.Background()) },
			response: `[{"id":"rr-1","container_id":"c","rule_file":"f","status":"pending","reason":null,"submitted_at":"t"}]`,
			want:     []api.PendingRuleRequest{{ID: "rr-1", ContainerID: "c", RuleFile: "f", Status: api.RequestPending, SubmittedAt: "t"}},
			wantReq:  "GET /api/v1/requests/rules HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "approve",
			call:     func(c *Client) (any, error) { return c.ApproveRuleRequest(context.Background(), "rr 1") },
			response: `{"id":"rr 1","rules_loaded":12}`,
			want:     api.ApproveResult{ID: "rr 1", RulesLoaded: 12},
			wantReq:  "POST /api/v1/requests/rules/rr%201/approve HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name:     "reject without reason sends no body",
			call:     func(c *Client) (any, error) { return c.RejectRuleRequest(context.Background(), "rr-1", nil) },
			response: `{"id":"rr-1"}`,
			want:     api.RejectResult{ID: "rr-1"},
			wantReq:  "POST /api/v1/requests/rules/rr-1/reject HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name:     "reject with reason",
			call:     func(c *Client) (any, error) { return c.RejectRuleRequest(context.Background(), "rr-1", ptr("no")) },
			response: `{"id":"rr-1"}`,
			want:     api.RejectResult{ID: "rr-1"},
			wantReq: "POST /api/v1/requests/rules/rr-1/reject HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n" +
				`{"reason":"no"}`,
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
