// Package hostapi serves the operator API on host.sock: HTTP over a Unix
// socket, every response in the api.Response envelope. Handlers only decode,
// call the Service and encode; the decisions live behind the interface.
package hostapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"outcall.dev/outcall/pkg/api"
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
	// status through StatusError: 400 bad input, 404 unknown rule or
	// request, 409 request not pending or bridge down, 422 invalid rules on
	// reload, 500 otherwise.
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
}

// maxBody bounds request bodies; no host API request is anywhere near it
// (rule files are read from the rules directory, never sent in a body).
const maxBody = 1 << 20

// Timeouts bound how long a client may take to send a request, so a stalled
// client cannot hold a connection and its goroutine forever.
type Timeouts struct {
	// Header bounds reading the request line and headers.
	Header time.Duration
	// Body bounds reading the body, from the end of the headers.
	Body time.Duration
}

// DefaultTimeouts are generous for a CLI on the same host and short enough
// that stalled connections do not pile up.
var DefaultTimeouts = Timeouts{Header: 10 * time.Second, Body: 10 * time.Second}

// Handler returns the host API routes.
func Handler(svc Service, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/bridge", func(w http.ResponseWriter, r *http.Request) {
		st, err := svc.BridgeStatus(r.Context())
		reply(w, log, &st, err)
	})
	mux.HandleFunc("POST /api/v1/bridge/up", func(w http.ResponseWriter, r *http.Request) {
		reply[struct{}](w, log, nil, svc.BridgeUp(r.Context()))
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
				write[struct{}](w, log, http.StatusBadRequest, api.Response[struct{}]{Error: fmt.Sprintf("invalid query parameter remove_ports=%q: want true or false", v)})
				return
			}
			req.RemovePorts = req.RemovePorts || b
		}
		reply[struct{}](w, log, nil, svc.BridgeDown(r.Context(), req))
	})
	mux.HandleFunc("GET /api/v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		eps, err := svc.Endpoints(r.Context())
		reply(w, log, &eps, err)
	})
	mux.HandleFunc("POST /api/v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		var req api.EndpointAddRequest
		if !decode(w, log, r, &req) {
			return
		}
		ep, err := svc.AddEndpoint(r.Context(), req)
		reply(w, log, &ep, err)
	})
	mux.HandleFunc("DELETE /api/v1/endpoints/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply[struct{}](w, log, nil, svc.RemoveEndpoint(r.Context(), r.PathValue("name")))
	})
	mux.HandleFunc("POST /api/v1/rule/allow", func(w http.ResponseWriter, r *http.Request) {
		var req api.AllowRequest
		if !decode(w, log, r, &req) {
			return
		}
		rule, err := svc.Allow(r.Context(), req)
		reply(w, log, &rule, err)
	})
	mux.HandleFunc("POST /api/v1/rule/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req api.RevokeRequest
		if !decode(w, log, r, &req) {
			return
		}
		reply[struct{}](w, log, nil, svc.Revoke(r.Context(), req))
	})
	mux.HandleFunc("GET /api/v1/rules/active", func(w http.ResponseWriter, r *http.Request) {
		rules, err := svc.ActiveRules(r.Context())
		reply(w, log, &rules, err)
	})
	mux.HandleFunc("POST /api/v1/rules/flush", func(w http.ResponseWriter, r *http.Request) {
		n, err := svc.FlushRules(r.Context())
		reply(w, log, &api.FlushResult{Removed: n}, err)
	})
	ruleRoutes(mux, svc, log)
	mux.HandleFunc("GET /api/v1/datapath/counters", func(w http.ResponseWriter, r *http.Request) {
		cs, err := svc.DatapathCounters(r.Context())
		reply(w, log, &cs, err)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		write[struct{}](w, log, http.StatusNotFound, api.Response[struct{}]{Error: fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)})
	})
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
		reply(w, log, &res, err)
	})
	mux.HandleFunc("GET /api/v1/rules", func(w http.ResponseWriter, r *http.Request) {
		rules, err := svc.Rules(r.Context())
		rules = nonNil(rules)
		reply(w, log, &rules, err)
	})
	mux.HandleFunc("GET /api/v1/rule/{id}", func(w http.ResponseWriter, r *http.Request) {
		rule, err := svc.Rule(r.Context(), r.PathValue("id"))
		if rule.Egress != nil {
			// A copy: the Service may hand out its live rule set's Egress.
			egress := *rule.Egress
			egress.Ports = nonNil(egress.Ports)
			rule.Egress = &egress
		}
		reply(w, log, &rule, err)
	})
	mux.HandleFunc("POST /api/v1/rules/reload", func(w http.ResponseWriter, r *http.Request) {
		if !decode(w, log, r, &struct{}{}) {
			return
		}
		res, err := svc.ReloadRules(r.Context())
		res.Warnings = nonNil(res.Warnings)
		reply(w, log, &res, err)
	})
	mux.HandleFunc("POST /api/v1/rule/test", func(w http.ResponseWriter, r *http.Request) {
		var req api.TestExpressionRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.TestExpression(r.Context(), req)
		reply(w, log, &res, err)
	})
	mux.HandleFunc("GET /api/v1/requests/rules", func(w http.ResponseWriter, r *http.Request) {
		reqs, err := svc.RuleRequests(r.Context())
		reqs = nonNil(reqs)
		reply(w, log, &reqs, err)
	})
	mux.HandleFunc("POST /api/v1/requests/rules/{id}/approve", func(w http.ResponseWriter, r *http.Request) {
		if !decode(w, log, r, &struct{}{}) {
			return
		}
		res, err := svc.ApproveRuleRequest(r.Context(), r.PathValue("id"))
		reply(w, log, &res, err)
	})
	mux.HandleFunc("POST /api/v1/requests/rules/{id}/reject", func(w http.ResponseWriter, r *http.Request) {
		var req api.RejectRequest
		if !decode(w, log, r, &req) {
			return
		}
		res, err := svc.RejectRuleRequest(r.Context(), r.PathValue("id"), req.Reason)
		reply(w, log, &res, err)
	})
}

// nonNil turns a nil slice into an empty one, so lists serialise as [] and
// a client never has to tell "none" from "absent".
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors, so a typo in a request never silently means something else. An
// empty body decodes as {}; decoding into struct{} admits only an empty
// body, {} or null, which is how bodiless POSTs refuse stray payloads.
func decode(w http.ResponseWriter, log *slog.Logger, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil && len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err = dec.Decode(v); err == nil && dec.More() {
			err = errors.New("trailing data after JSON object")
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooLarge):
		write[struct{}](w, log, http.StatusRequestEntityTooLarge, api.Response[struct{}]{Error: fmt.Sprintf("invalid request body: larger than %d bytes", tooLarge.Limit)})
	case errors.Is(err, os.ErrDeadlineExceeded):
		write[struct{}](w, log, http.StatusRequestTimeout, api.Response[struct{}]{Error: "invalid request body: not received in time: " + err.Error()})
	default:
		write[struct{}](w, log, http.StatusBadRequest, api.Response[struct{}]{Error: "invalid request body: " + err.Error()})
	}
	return false
}

// boundBodies limits every request body to maxBody and to the body timeout.
// The deadline is set only when a body is expected and is lifted the moment
// the body has been read: the server's background read of an idle
// connection would otherwise hit it and cancel a slow handler's context
// (which is why the server has no ReadTimeout).
func boundBodies(h http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(timeout)); err == nil {
				r.Body = &deadlineBody{ReadCloser: http.MaxBytesReader(w, r.Body, maxBody), rc: rc}
			} else {
				r.Body = http.MaxBytesReader(w, r.Body, maxBody)
			}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody clears the connection's read deadline once the body ends.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

func reply[T any](w http.ResponseWriter, log *slog.Logger, data *T, err error) {
	if err != nil {
		write(w, log, statusOf(err), api.Response[T]{Error: err.Error()})
		return
	}
	write(w, log, http.StatusOK, api.Response[T]{Success: true, Data: data})
}

func write[T any](w http.ResponseWriter, log *slog.Logger, status int, resp api.Response[T]) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(resp); err != nil {
		log.Debug("write host API response", "err", err)
	}
}

// StatusError lets a Service choose the HTTP status of an error; the CLI
// reads only the envelope, scripts may read the status.
type StatusError struct {
	Status int
	Err    error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

func statusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return http.StatusInternalServerError
}

// Listen prepares the socket: parent directory created (0750), a stale socket
// removed, the new one bound and restricted to its owner (0600).
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("socket path %s exists and is not a socket; refusing to replace it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("restrict socket %s: %w", path, err)
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
	srv := &http.Server{Handler: boundBodies(h, t.Body), ReadHeaderTimeout: t.Header,
		// A client that never reads its answer must not hold the
		// connection either.
		WriteTimeout: t.Header + t.Body + time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if addr, ok := l.Addr().(*net.UnixAddr); ok {
		_ = os.Remove(addr.Name)
	}
	return err
}
