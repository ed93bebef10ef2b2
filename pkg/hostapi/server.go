// Package hostapi serves the operator API on host.sock: HTTP over a Unix
// socket, every response in the api.Response envelope. Handlers only decode,
// call the Service and encode; the decisions live behind the interface. The
// envelope, decoding, socket and error-to-status mapping are apikit's, shared
// with the other APIs.
package hostapi

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
)

// Service is what the host API exposes.
type Service interface {
	BridgeStatus(ctx context.Context) (api.BridgeStatus, error)
	BridgeUp(ctx context.Context) error
	// BridgeDown tears the bridge down; it refuses (409) while the bridge
	// has ports unless req.RemovePorts.
	BridgeDown(ctx context.Context, req api.BridgeDownRequest) error
	Endpoints(ctx context.Context) ([]api.Endpoint, error)
	AddEndpoint(ctx context.Context, req api.EndpointAddRequest) (api.Endpoint, error)
	RemoveEndpoint(ctx context.Context, name string) error
	Allow(ctx context.Context, req api.AllowRequest) (api.ActiveRule, error)
	Revoke(ctx context.Context, req api.RevokeRequest) error
	ActiveRules(ctx context.Context) ([]api.ActiveRule, error)
	FlushRules(ctx context.Context) (int, error)
	DatapathCounters(ctx context.Context) ([]api.DatapathCounter, error)

	// The rule engine (S003-IF-001..005, 007..009). Errors choose their
	// status through their apikit kind, mapped by
	// apikit.StatusOf: 400 bad input, 404 unknown rule or request, 409
	// request not pending or bridge down, 422 invalid rules on reload, 500
	// otherwise.
	Evaluate(ctx context.Context, c api.EvaluationContext) (api.EvaluateResult, error)
	Rules(ctx context.Context) ([]api.RuleSummary, error)
	Rule(ctx context.Context, id string) (api.RuleDetail, error)
	ReloadRules(ctx context.Context) (api.ReloadResult, error)
	TestExpression(ctx context.Context, req api.TestExpressionRequest) (api.TestExpressionResult, error)
	RuleRequests(ctx context.Context) ([]api.PendingRuleRequest, error)
	ApproveRuleRequest(ctx context.Context, id string) (api.ApproveResult, error)
	// RejectRuleRequest gets a nil reason when the operator gave none; the
	// Service validates a given one (S003-IF-009).
	RejectRuleRequest(ctx context.Context, id string, reason *string) (api.RejectResult, error)

	// The networks (S002-IF-001..004, FR-031). A name is the suffix the
	// operator gave ("staging"); the Service adds api.NetworkPrefix, and a
	// nil name is the default network. A name that was given is never nil,
	// even "", so the Service refuses "" rather than read it as the
	// default. Results carry full names. Errors choose their status through
	// their apikit kind: 400 invalid name, subnet or gateway, 409 bridge
	// down, a network that is not Outcall's (a lookalike outcall-* network),
	// a subnet in use or containers still connected, 503 a subsystem it
	// needs is unavailable (Docker, from issue 10 on), 500 otherwise.
	CreateNetwork(ctx context.Context, req api.NetworkCreateRequest) (api.NetworkCreateResult, error)
	// Network reports one network; one that does not exist is no error
	// but Exists false, with its full name (S002-IF-002).
	Network(ctx context.Context, name *string) (api.NetworkStatus, error)
	Networks(ctx context.Context) ([]api.NetworkStatus, error)
	// DestroyNetwork refuses while containers are connected; one that does
	// not exist is no error but Destroyed false (S002-IF-004).
	DestroyNetwork(ctx context.Context, req api.NetworkDestroyRequest) (api.NetworkDestroyResult, error)
	NetworkConfig(ctx context.Context) (api.NetworkConfig, error)

	// The DNS filter (S007-IF-001..003) and the proxy (S006).
	DNSStatus(ctx context.Context) (api.DNSFilterStatus, error)
	// DNSCache returns the cache's stats and, with entries, its entries.
	DNSCache(ctx context.Context, entries bool) (api.DNSCacheDetail, error)
	FlushDNSCache(ctx context.Context) (api.DNSCacheFlushResult, error)
	ProxyStatus(ctx context.Context) (api.ProxyStatus, error)

	// The Docker manager's agent containers (S008-IF-001..006), here on
	// the host socket only, never on the agent socket (S008-FR-019).
	// Names are exact: a container's name as given, a network's full name
	// (the CLI adds api.NetworkPrefix to the suffix an operator types).
	// Errors choose their status through their apikit kind: 400 a request
	// that fails validation (bind spec, limits, user, image reference,
	// name), 403 a bind source on the deny list, a destination covering a
	// protected path, or a target container that is not managed by
	// outcalld, 404 a container or image that does not exist, 409 a
	// container still running (remove without force) or a duplicate name,
	// 503 Docker, or the Docker manager itself, unavailable, 500
	// otherwise.
	CreateContainer(ctx context.Context, req api.ContainerCreateRequest) (api.ContainerCreateResult, error)
	// Containers lists every container labelled managed-by=outcalld, in
	// no particular order (S008-FR-014).
	Containers(ctx context.Context) ([]api.ContainerInfo, error)
	// Container inspects one managed container, its environment values
	// redacted (S008-FR-015); one that does not exist is 404.
	Container(ctx context.Context, name string) (api.ContainerInspectResult, error)
	// StopContainer stops a running container; one that is not running is
	// no error but Stopped false, one that does not exist is 404
	// (S008-FR-034, EC-007, conflicts 2 and 3).
	StopContainer(ctx context.Context, req api.ContainerStopRequest) (api.ContainerStopResult, error)
	// RemoveContainer removes a container and its anonymous volumes; one
	// that does not exist is no error but Removed false (S008-FR-013,
	// FR-034, EC-008).
	RemoveContainer(ctx context.Context, req api.ContainerRemoveRequest) (api.ContainerRemoveResult, error)
	// PullImage pulls an image; one already present and current is
	// Pulled false (S008-IF-006).
	PullImage(ctx context.Context, req api.ImagePullRequest) (api.ImagePullResult, error)
}

// maxBody bounds request bodies; no host API request is anywhere near it
// (rule files are read from the rules directory, never sent in a body).
const maxBody = apikit.DefaultMaxBody

// Timeouts bound how long a client may take to send a request
// (apikit.Timeouts).
type Timeouts = apikit.Timeouts

// DefaultTimeouts are generous for a CLI on the same host and short enough
// that stalled connections do not pile up.
var DefaultTimeouts = apikit.DefaultTimeouts

// Handler returns the host API routes.
func Handler(svc Service, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/bridge", func(w http.ResponseWriter, r *http.Request) {
		st, err := svc.BridgeStatus(r.Context())
		apikit.Reply(w, log, &st, err)
	})
	mux.HandleFunc("POST /api/v1/bridge/up", func(w http.ResponseWriter, r *http.Request) {
		apikit.Reply[struct{}](w, log, nil, svc.BridgeUp(r.Context()))
	})
	mux.HandleFunc("POST /api/v1/bridge/down", func(w http.ResponseWriter, r *http.Request) {
		// The spec's request has no body; remove_ports comes as a query
		// parameter or, equally, as a body field.
		var req api.BridgeDownRequest
		if !decode(w, log, r, &req) {
			return
		}
		if v := r.URL.Query().Get("remove_ports"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				apikit.WriteError(w, log, apikit.Errorf(apikit.ErrInvalid, "invalid query parameter remove_ports=%q: want true or false", v))
				return
			}
			req.RemovePorts = req.RemovePorts || b
		}
		apikit.Reply[struct{}](w, log, nil, svc.BridgeDown(r.Context(), req))
	})
	mux.HandleFunc("GET /api/v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		eps, err := svc.Endpoints(r.Context())
		apikit.Reply(w, log, &eps, err)
	})
	mux.HandleFunc("POST /api/v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		var req api.EndpointAddRequest
		if !decode(w, log, r, &req) {
			return
		}
		ep, err := svc.AddEndpoint(r.Context(), req)
		apikit.Reply(w, log, &ep, err)
	})
	mux.HandleFunc("DELETE /api/v1/endpoints/{name}", func(w http.ResponseWriter, r *http.Request) {
		apikit.Reply[struct{}](w, log, nil, svc.RemoveEndpoint(r.Context(), r.PathValue("name")))
	})
	mux.HandleFunc("POST /api/v1/rule/allow", func(w http.ResponseWriter, r *http.Request) {
		var req api.AllowRequest
		if !decode(w, log, r, &req) {
			return
		}
		rule, err := svc.Allow(r.Context(), req)
		apikit.Reply(w, log, &rule, err)
	})
	mux.HandleFunc("POST /api/v1/rule/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req api.RevokeRequest
		if !decode(w, log, r, &req) {
			return
		}
		apikit.Reply[struct{}](w, log, nil, svc.Revoke(r.Context(), req))
	})
	mux.HandleFunc("GET /api/v1/rules/active", func(w http.ResponseWriter, r *http.Request) {
		rules, err := svc.ActiveRules(r.Context())
		apikit.Reply(w, log, &rules, err)
	})
	mux.HandleFunc("POST /api/v1/rules/flush", func(w http.ResponseWriter, r *http.Request) {
		n, err := svc.FlushRules(r.Context())
		apikit.Reply(w, log, &api.FlushResult{Removed: n}, err)
	})
	ruleRoutes(mux, svc, log)
	networkRoutes(mux, svc, log)
	nameRoutes(mux, svc, log)
	containerRoutes(mux, svc, log)
	mux.HandleFunc("GET /api/v1/datapath/counters", func(w http.ResponseWriter, r *http.Request) {
		cs, err := svc.DatapathCounters(r.Context())
		apikit.Reply(w, log, &cs, err)
	})
	mux.Handle("/", apikit.NoRoute(log))
	return mux
}

// ruleRoutes adds the rule engine routes. They share prefixes with the grant
// routes above (GET /api/v1/rules next to GET /api/v1/rules/active, POST
// /api/v1/rule/evaluate next to POST /api/v1/rule/allow); the mux keeps them
// apart because every pattern here is a literal path or differs by method.
func ruleRoutes(mux *http.ServeMux, svc Service, log *slog.Logger) {
	mux.HandleFunc("POST /api/v1/rule/evaluate", func(w http.ResponseWriter, r *http.Request) {
		var req api.EvaluateRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.Evaluate(r.Context(), req.Context)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("GET /api/v1/rules", func(w http.ResponseWriter, r *http.Request) {
		rules, err := svc.Rules(r.Context())
		rules = apikit.NonNil(rules)
		apikit.Reply(w, log, &rules, err)
	})
	mux.HandleFunc("GET /api/v1/rule/{id}", func(w http.ResponseWriter, r *http.Request) {
		rule, err := svc.Rule(r.Context(), r.PathValue("id"))
		if rule.Egress != nil {
			// A copy: the Service may hand out its live rule set's Egress.
			egress := *rule.Egress
			egress.Ports = apikit.NonNil(egress.Ports)
			rule.Egress = &egress
		}
		apikit.Reply(w, log, &rule, err)
	})
	mux.HandleFunc("POST /api/v1/rules/reload", func(w http.ResponseWriter, r *http.Request) {
		if !decode(w, log, r, &struct{}{}) {
			return
		}
		res, err := svc.ReloadRules(r.Context())
		res.Warnings = apikit.NonNil(res.Warnings)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("POST /api/v1/rule/test", func(w http.ResponseWriter, r *http.Request) {
		var req api.TestExpressionRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.TestExpression(r.Context(), req)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("GET /api/v1/requests/rules", func(w http.ResponseWriter, r *http.Request) {
		reqs, err := svc.RuleRequests(r.Context())
		reqs = apikit.NonNil(reqs)
		apikit.Reply(w, log, &reqs, err)
	})
	mux.HandleFunc("POST /api/v1/requests/rules/{id}/approve", func(w http.ResponseWriter, r *http.Request) {
		if !decode(w, log, r, &struct{}{}) {
			return
		}
		res, err := svc.ApproveRuleRequest(r.Context(), r.PathValue("id"))
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("POST /api/v1/requests/rules/{id}/reject", func(w http.ResponseWriter, r *http.Request) {
		var req api.RejectRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.RejectRuleRequest(r.Context(), r.PathValue("id"), req.Reason)
		apikit.Reply(w, log, &res, err)
	})
}

// networkRoutes adds the network routes (S002-IF-001..004, FR-031). Every
// pattern is a literal path, so /api/v1/network, /api/v1/networks and the
// paths under /api/v1/network/ never shadow each other. Containers is
// always a list on the wire, [] when empty, as the spec's status has it.
func networkRoutes(mux *http.ServeMux, svc Service, log *slog.Logger) {
	mux.HandleFunc("POST /api/v1/network/create", func(w http.ResponseWriter, r *http.Request) {
		// No body, {} and null all mean every field absent: the default
		// network on an allocated subnet.
		var req api.NetworkCreateRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.CreateNetwork(r.Context(), req)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("GET /api/v1/network", func(w http.ResponseWriter, r *http.Request) {
		name, err := networkName(r)
		if err != nil {
			apikit.WriteError(w, log, err)
			return
		}
		st, err := svc.Network(r.Context(), name)
		st.Containers = apikit.NonNil(st.Containers)
		apikit.Reply(w, log, &st, err)
	})
	mux.HandleFunc("GET /api/v1/networks", func(w http.ResponseWriter, r *http.Request) {
		nets, err := svc.Networks(r.Context())
		// A copy: the Service may hand out its own slice.
		out := make([]api.NetworkStatus, len(nets))
		for i, st := range nets {
			st.Containers = apikit.NonNil(st.Containers)
			out[i] = st
		}
		apikit.Reply(w, log, &out, err)
	})
	mux.HandleFunc("POST /api/v1/network/destroy", func(w http.ResponseWriter, r *http.Request) {
		var req api.NetworkDestroyRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.DestroyNetwork(r.Context(), req)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("GET /api/v1/network/config", func(w http.ResponseWriter, r *http.Request) {
		cfg, err := svc.NetworkConfig(r.Context())
		apikit.Reply(w, log, &cfg, err)
	})
}

// nameRoutes adds the DNS filter's routes (S007-IF-001..003) and the
// proxy's (S006). Lists are always lists on the wire, [] when empty. GET
// /api/v1/dns/cache answers the stats alone; with ?entries=true it answers
// the DnsCacheDetail shape, stats and entries.
func nameRoutes(mux *http.ServeMux, svc Service, log *slog.Logger) {
	mux.HandleFunc("GET /api/v1/dns", func(w http.ResponseWriter, r *http.Request) {
		st, err := svc.DNSStatus(r.Context())
		st.Upstreams = apikit.NonNil(st.Upstreams)
		apikit.Reply(w, log, &st, err)
	})
	mux.HandleFunc("GET /api/v1/dns/cache", func(w http.ResponseWriter, r *http.Request) {
		entries, err := boolParam(r, "entries")
		if err != nil {
			apikit.WriteError(w, log, err)
			return
		}
		detail, err := svc.DNSCache(r.Context(), entries)
		if !entries {
			apikit.Reply(w, log, &detail.Stats, err)
			return
		}
		detail.Entries = apikit.NonNil(detail.Entries)
		apikit.Reply(w, log, &detail, err)
	})
	mux.HandleFunc("POST /api/v1/dns/cache/flush", func(w http.ResponseWriter, r *http.Request) {
		// The spec's request has no body; {} and null are accepted as the
		// same, anything with a field is refused.
		if !decode(w, log, r, &struct{}{}) {
			return
		}
		res, err := svc.FlushDNSCache(r.Context())
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("GET /api/v1/proxy", func(w http.ResponseWriter, r *http.Request) {
		st, err := svc.ProxyStatus(r.Context())
		apikit.Reply(w, log, &st, err)
	})
}

// containerRoutes adds the Docker manager's routes (S008-IF-001..006).
// Every pattern is a literal path, so /api/v1/container, /api/v1/containers
// and the paths under /api/v1/container/ never shadow each other. Lists
// are always lists on the wire, [] when empty: the containers, and an
// inspected container's mounts and environment.
func containerRoutes(mux *http.ServeMux, svc Service, log *slog.Logger) {
	mux.HandleFunc("POST /api/v1/container/create", func(w http.ResponseWriter, r *http.Request) {
		var req api.ContainerCreateRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.CreateContainer(r.Context(), req)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("GET /api/v1/containers", func(w http.ResponseWriter, r *http.Request) {
		cs, err := svc.Containers(r.Context())
		cs = apikit.NonNil(cs)
		apikit.Reply(w, log, &cs, err)
	})
	mux.HandleFunc("GET /api/v1/container", func(w http.ResponseWriter, r *http.Request) {
		name, err := containerName(r)
		if err != nil {
			apikit.WriteError(w, log, err)
			return
		}
		res, err := svc.Container(r.Context(), name)
		res.Mounts = apikit.NonNil(res.Mounts)
		res.Env = apikit.NonNil(res.Env)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("POST /api/v1/container/stop", func(w http.ResponseWriter, r *http.Request) {
		var req api.ContainerStopRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.StopContainer(r.Context(), req)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("POST /api/v1/container/remove", func(w http.ResponseWriter, r *http.Request) {
		var req api.ContainerRemoveRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.RemoveContainer(r.Context(), req)
		apikit.Reply(w, log, &res, err)
	})
	mux.HandleFunc("POST /api/v1/container/pull", func(w http.ResponseWriter, r *http.Request) {
		var req api.ImagePullRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.PullImage(r.Context(), req)
		apikit.Reply(w, log, &res, err)
	})
}

// containerName reads the name query parameter of an inspect. There is no
// default container, so an absent name is refused, as is a query that
// does not parse or names twice; a present name, even "", is the
// Service's to validate.
func containerName(r *http.Request) (string, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", apikit.Errorf(apikit.ErrInvalid, "invalid query: %w", err)
	}
	vs, ok := q["name"]
	switch {
	case !ok:
		return "", apikit.Errorf(apikit.ErrInvalid, "missing query parameter name: want ?name=<container>")
	case len(vs) > 1:
		return "", apikit.Errorf(apikit.ErrInvalid, "invalid query parameter name: given %d times, want once", len(vs))
	default:
		return vs[0], nil
	}
}

// boolParam reads a boolean query parameter: absent is false, "true" and
// "false" are themselves, and any other value, or the parameter given more
// than once, is refused rather than read as false.
func boolParam(r *http.Request, name string) (bool, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return false, apikit.Errorf(apikit.ErrInvalid, "invalid query: %w", err)
	}
	vs, ok := q[name]
	switch {
	case !ok:
		return false, nil
	case len(vs) > 1:
		return false, apikit.Errorf(apikit.ErrInvalid, "invalid query parameter %s: given %d times, want at most once", name, len(vs))
	case vs[0] == "true":
		return true, nil
	case vs[0] == "false":
		return false, nil
	default:
		return false, apikit.Errorf(apikit.ErrInvalid, "invalid query parameter %s=%q: want true or false", name, vs[0])
	}
}

// networkName reads the name query parameter: absent is nil (the default
// network), present is the value, even "", for the Service to validate. A
// query that does not parse, or names twice, is refused: URL.Query would
// drop a malformed pair, and a mistyped name would silently mean the
// default network.
func networkName(r *http.Request) (*string, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, apikit.Errorf(apikit.ErrInvalid, "invalid query: %w", err)
	}
	vs, ok := q["name"]
	switch {
	case !ok:
		return nil, nil
	case len(vs) > 1:
		return nil, apikit.Errorf(apikit.ErrInvalid, "invalid query parameter name: given %d times, want at most once", len(vs))
	default:
		return &vs[0], nil
	}
}

// decode reads a JSON body strictly (apikit.ReadJSON, bounded by maxBody)
// and answers the error itself: 400, 413 or 408, whatever its kind says.
func decode(w http.ResponseWriter, log *slog.Logger, r *http.Request, v any) bool {
	if err := apikit.ReadJSON(w, r, v, maxBody); err != nil {
		apikit.WriteError(w, log, err)
		return false
	}
	return true
}

// Listen prepares the socket: parent directory created (0750), a stale socket
// replaced, the new one restricted to its owner (0600) from the moment it
// can be reached (see apikit.Listen).
func Listen(path string) (net.Listener, error) {
	l, err := apikit.Listen(path, apikit.SocketOptions{Mode: 0o600})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Serve serves h on l until ctx is done, then stops accepting, drains
// in-flight requests for up to 5 seconds and removes the socket file.
// Requests are bounded by DefaultTimeouts and maxBody.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	return ServeWithTimeouts(ctx, l, h, DefaultTimeouts)
}

// ServeWithTimeouts is Serve with explicit request timeouts (tests use short
// ones).
func ServeWithTimeouts(ctx context.Context, l net.Listener, h http.Handler, t Timeouts) error {
	return apikit.Serve(ctx, l, h, apikit.ServeOptions{Timeouts: t, MaxBody: maxBody})
}
