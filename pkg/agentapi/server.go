package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/rulefile"
	"outcall.dev/outcall/pkg/rulereq"
	"outcall.dev/outcall/pkg/rules"
)

// maxBody bounds every request body (S004-EC-010).
const maxBody = api.AgentBodyLimit

// Defaults and bounds of the server (S004 §1.3).
const (
	// DefaultLookupTimeout bounds one peer identity lookup.
	DefaultLookupTimeout = 5 * time.Second
	// LookupConcurrency is how many identity lookups run at once; one
	// more is refused at once with 503.
	LookupConcurrency = 64
	// EvalConcurrency is how many evaluations run at once; the timeout
	// covers the wait for a slot.
	EvalConcurrency = 16
	// DefaultMaxConns caps the open connections on the agent socket.
	DefaultMaxConns = 1024
	// DefaultIdleTimeout closes a kept-alive connection that sends nothing.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultSweepInterval is how often sessions of containers that lost
	// their identity are dropped.
	DefaultSweepInterval = time.Minute
)

// Policy is the rule engine as the agent API uses it: *rules.Engine.
type Policy interface {
	// EvaluateContext decides c at layer, or returns ctx's error when ctx
	// ends first.
	EvaluateContext(ctx context.Context, layer rules.Layer, c *api.EvaluationContext) (rules.Outcome, error)
	// CheckRequest validates a submitted rule file.
	CheckRequest(ruleFile []byte) error
}

// RuleRequests is the rule request store: *rulereq.Store.
type RuleRequests interface {
	Submit(ctx context.Context, containerID, ruleFile string) (api.RuleRequestResponse, error)
	Status(ctx context.Context, containerID, id string) (api.RuleRequestResponse, error)
}

// Options configure a Server; zero fields take the defaults.
type Options struct {
	Identities Identities
	Policy     Policy
	Requests   RuleRequests
	Logger     *slog.Logger
	// PermRate and RuleRate limit permission checks and rule submissions
	// per container (--agent-perm-rate, --agent-rule-rate).
	PermRate, RuleRate Rate
	// EvalTimeout bounds one permission check's wait for an evaluation
	// slot and its evaluation (--agent-timeout-secs).
	EvalTimeout time.Duration
	// LookupTimeout bounds one peer identity lookup.
	LookupTimeout time.Duration
	// ProcRoot is where /proc is ("/proc"); tests point it at a directory
	// of fake <pid>/cgroup files.
	ProcRoot string
	// Now is the clock of the rate limits (time.Now).
	Now func() time.Time
	// MaxConns caps open connections (DefaultMaxConns).
	MaxConns int
	// Timeouts bound reading a request's header and body
	// (apikit.DefaultTimeouts); IdleTimeout a kept-alive connection.
	Timeouts    apikit.Timeouts
	IdleTimeout time.Duration
	// ShutdownGrace bounds how long in-flight requests may finish once
	// Serve's context ends (apikit.DefaultShutdownGrace).
	ShutdownGrace time.Duration
	// SweepInterval is how often stale sessions are dropped.
	SweepInterval time.Duration
}

// Server is the agent API on agent.sock (S004).
type Server struct {
	opts     Options
	log      *slog.Logger
	ids      Identities
	policy   Policy
	requests RuleRequests
	procRoot string

	sessions  *sessions
	permLimit *limiter
	ruleLimit *limiter
	lookups   chan struct{}
	evals     chan struct{}
	m         *metrics
}

// New checks opts and builds a Server.
func New(opts Options) (*Server, error) {
	if opts.Identities == nil || opts.Policy == nil || opts.Requests == nil {
		return nil, errors.New("agent API: identities, policy and rule requests are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PermRate == (Rate{}) {
		opts.PermRate, _ = ParseRate(api.DefaultAgentPermRate)
	}
	if opts.RuleRate == (Rate{}) {
		opts.RuleRate, _ = ParseRate(api.DefaultAgentRuleRate)
	}
	if err := opts.PermRate.Validate(); err != nil {
		return nil, fmt.Errorf("--agent-perm-rate: %w", err)
	}
	if err := opts.RuleRate.Validate(); err != nil {
		return nil, fmt.Errorf("--agent-rule-rate: %w", err)
	}
	if opts.EvalTimeout == 0 {
		opts.EvalTimeout = api.DefaultAgentTimeoutSecs * time.Second
	}
	if opts.EvalTimeout < 0 || opts.EvalTimeout > api.MaxAgentTimeoutSecs*time.Second {
		return nil, fmt.Errorf("--agent-timeout-secs: %v is outside 1-%ds", opts.EvalTimeout, api.MaxAgentTimeoutSecs)
	}
	if opts.LookupTimeout <= 0 {
		opts.LookupTimeout = DefaultLookupTimeout
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.Timeouts.Header <= 0 {
		opts.Timeouts.Header = apikit.DefaultTimeouts.Header
	}
	if opts.Timeouts.Body <= 0 {
		opts.Timeouts.Body = apikit.DefaultTimeouts.Body
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = apikit.DefaultShutdownGrace
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	s := &Server{
		opts: opts, log: opts.Logger, ids: opts.Identities, policy: opts.Policy, requests: opts.Requests,
		procRoot:  opts.ProcRoot,
		sessions:  newSessions(MaxSessions),
		permLimit: newLimiter(opts.PermRate, opts.Now),
		ruleLimit: newLimiter(opts.RuleRate, opts.Now),
		lookups:   make(chan struct{}, LookupConcurrency),
		evals:     make(chan struct{}, EvalConcurrency),
	}
	s.m = newMetrics(func() float64 { return float64(s.sessions.len()) })
	return s, nil
}

// Collectors returns the server's Prometheus collectors, for the daemon's
// registry.
func (s *Server) Collectors() []prometheus.Collector { return s.m.collectors() }

// Listen binds the agent socket at path: mode 0666, because any container
// process may connect (identity is checked per request, never by file
// permissions). A stale socket from a daemon that died is replaced; the
// listener removes the socket when it closes.
func Listen(path string) (*apikit.Listener, error) {
	l, err := apikit.Listen(path, apikit.SocketOptions{Mode: 0o666, DirMode: 0o755})
	if err != nil {
		return nil, fmt.Errorf("failed to bind agent socket at %s: %w", path, err)
	}
	return l, nil
}

// Serve serves the agent API on l until ctx is done; then it stops
// accepting, lets in-flight requests finish for up to the shutdown grace,
// and closes l (a Listener from Listen then removes its socket).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	t := s.opts.Timeouts
	// http.Server's ReadTimeout would cancel a handler's context when its
	// deadline passes during the handler (the server's background read
	// hits it), so the body is bounded per request by apikit.BoundBodies
	// and ReadTimeout is only a backstop longer than any handler.
	handlerMax := s.opts.LookupTimeout + s.opts.EvalTimeout + 10*time.Second
	srv := &http.Server{
		Handler:           apikit.BoundBodies(s.Handler(), 1<<20, t.Body),
		ReadHeaderTimeout: t.Header,
		ReadTimeout:       t.Header + t.Body + handlerMax,
		WriteTimeout:      t.Header + t.Body + handlerMax + 10*time.Second,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	pl := newPeerListener(l, s.opts.MaxConns)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(pl) }()
	sweep := time.NewTicker(s.opts.SweepInterval)
	defer sweep.Stop()
	for {
		select {
		case err := <-errc:
			_ = l.Close()
			return err
		case <-sweep.C:
			s.sweep()
			continue
		case <-ctx.Done():
		}
		break
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err != nil {
		_ = srv.Close()
	}
	<-errc
	_ = l.Close()
	return err
}

// forgetLimits drops both rate limits' state of one container: a new
// lifetime starts with a full budget.
func (s *Server) forgetLimits(containerID string) {
	s.permLimit.forget(containerID)
	s.ruleLimit.forget(containerID)
}

// sweep drops the sessions (and rate state) of containers whose identity
// is gone or was bound again.
func (s *Server) sweep() {
	for _, cid := range s.sessions.sweep(s.stale) {
		s.forgetLimits(cid)
		s.log.Info("agent session ended: the container's identity is gone", "container_id", cid)
	}
}

// stale reports whether b is no longer the registry's binding of its
// container.
func (s *Server) stale(b binding) bool {
	e, ok := s.ids.ContainerIdentity(b.containerID)
	return !ok || (binding{containerID: e.ContainerID, identity: e.Identity, ifindex: e.Ifindex}) != b
}

// Handler routes the four agent routes; everything else, the host API's
// routes included, is an enveloped 404 (or 405 for a route's path with
// another method).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, h := s.route(r)
		status, data, apiErr := h(r)
		outcome := outcomeOK
		if status == http.StatusCreated {
			outcome = outcomeCreated
		}
		if apiErr != nil {
			outcome = apiErr.outcome
			if apiErr.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.FormatInt(int64(apiErr.retryAfter/time.Second), 10))
			}
			if apiErr.status == http.StatusMethodNotAllowed {
				w.Header().Set("Allow", allowedMethod(r.URL.Path))
			}
			apikit.Write(w, s.log, apiErr.status, api.Response[struct{}]{Error: apiErr.msg})
		} else {
			apikit.Write(w, s.log, status, api.Response[any]{Success: true, Data: &data})
		}
		s.m.requests.WithLabelValues(route, outcome).Inc()
	})
}

type handlerFunc func(r *http.Request) (int, any, *apiError)

func (s *Server) route(r *http.Request) (string, handlerFunc) {
	path := r.URL.Path
	want := allowedMethod(path)
	var route string
	var h handlerFunc
	switch {
	case path == api.AgentRouteCheckin:
		route, h = routeCheckin, s.checkin
	case path == api.AgentRoutePermission:
		route, h = routePermission, s.permission
	case path == api.AgentRouteRuleRequests:
		route, h = routeRuleSubmit, s.submitRule
	case want != "":
		route, h = routeRuleStatus, s.ruleStatus
	default:
		return routeNone, func(r *http.Request) (int, any, *apiError) { return 0, nil, errNoRoute(r.Method, path) }
	}
	if r.Method != want {
		return route, func(r *http.Request) (int, any, *apiError) { return 0, nil, errMethod(r.Method, path) }
	}
	return route, h
}

// allowedMethod is the method of the route at path, or "" for no route.
func allowedMethod(path string) string {
	switch path {
	case api.AgentRouteCheckin, api.AgentRoutePermission, api.AgentRouteRuleRequests:
		return http.MethodPost
	}
	// Any id, well-formed or not, is the status route, which answers 404
	// "rule request not found" alike for every id it does not find.
	if id, ok := strings.CutPrefix(path, api.AgentRouteRuleRequests+"/"); ok && id != "" {
		return http.MethodGet
	}
	return ""
}

// readBody reads a request body of at most maxBody bytes. A declared or
// actual size above it is 413; the rest of such a body (up to net/http's
// post-handler drain of 256 KiB) is discarded by the server, so the
// connection stays usable (S004-EC-010). http.MaxBytesReader is not used
// for this: it makes the server close the connection after the answer.
func readBody(r *http.Request) ([]byte, *apiError) {
	if r.ContentLength > maxBody {
		return nil, errTooLarge
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, errMalformed
		}
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, errMalformed
	}
	if len(b) > maxBody {
		return nil, errTooLarge
	}
	return b, nil
}

// identify maps the request's peer to its managed container, bounded by
// the lookup timeout and the lookup semaphore (full: 503 at once). A
// lookup that times out keeps its permit until it ends, so abandoned
// lookups stay bounded too.
func (s *Server) identify(ctx context.Context) (identity, *apiError) {
	p := peerFrom(ctx)
	if p == nil || p.err != nil {
		return identity{}, errPeerUnverified
	}
	select {
	case s.lookups <- struct{}{}:
	default:
		return identity{}, errPeerBusy
	}
	type result struct {
		id  identity
		err *apiError
	}
	resc := make(chan result, 1)
	go func() {
		defer func() { <-s.lookups }()
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("agent peer lookup panicked", "panic", v)
				resc <- result{err: errPeerUnverified}
			}
		}()
		id, err := s.lookup(p)
		resc <- result{id, err}
	}()
	timer := time.NewTimer(s.opts.LookupTimeout)
	defer timer.Stop()
	select {
	case r := <-resc:
		return r.id, r.err
	case <-timer.C:
		return identity{}, errPeerTimeout
	case <-ctx.Done():
		return identity{}, errPeerTimeout
	}
}

// authenticate is every route but check-in: the token's shape (401 before
// any lookup), the peer (403/503, again on every request), the session
// (401), and that the session is the peer's container's (403).
func (s *Server) authenticate(r *http.Request) (identity, *apiError) {
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok || !validToken(tok) {
		return identity{}, errInvalidSession
	}
	id, apiErr := s.identify(r.Context())
	if apiErr != nil {
		return identity{}, apiErr
	}
	dropped, apiErr := s.sessions.authenticate(tok, id)
	if dropped {
		s.forgetLimits(id.ContainerID)
	}
	return id, apiErr
}

// bearer takes the token of "Bearer <token>": the scheme in any case, the
// header split at its first space, the token exactly as sent.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	return tok, ok && strings.EqualFold(scheme, "bearer")
}

// checkin is POST /v1/checkin (S004-IF-001): an empty body or {}.
func (s *Server) checkin(r *http.Request) (int, any, *apiError) {
	body, apiErr := readBody(r)
	if apiErr != nil {
		return 0, nil, apiErr
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := decodeObject(body, &struct{}{}); err != nil {
			return 0, nil, errMalformed
		}
	}
	id, apiErr := s.identify(r.Context())
	if apiErr != nil {
		s.log.Info("agent check-in refused", "reason", apiErr.msg, "peer_pid", peerPID(r.Context()))
		return 0, nil, apiErr
	}
	tok, replaced, apiErr := s.sessions.checkin(id, s.stale)
	if replaced {
		s.forgetLimits(id.ContainerID)
	}
	if apiErr != nil {
		s.log.Warn("agent check-in refused", "container_id", id.ContainerID, "reason", apiErr.msg)
		return 0, nil, apiErr
	}
	s.log.Info("agent checked in", "container_id", id.ContainerID, "peer_pid", peerPID(r.Context()))
	return http.StatusOK, api.CheckinData{ContainerID: id.ContainerID, SessionToken: tok,
		ContextKeys: append([]string(nil), api.CheckinContextKeys...)}, nil
}

func peerPID(ctx context.Context) int {
	if p := peerFrom(ctx); p != nil {
		return p.pid
	}
	return 0
}

// permission is POST /v1/permissions/check (S004-IF-002), in the order of
// S004 §2.5: body, session and peer, rate limit, context, evaluation.
func (s *Server) permission(r *http.Request) (int, any, *apiError) {
	body, apiErr := readBody(r)
	if apiErr != nil {
		return 0, nil, apiErr
	}
	req, apiErr := parsePermission(body)
	if apiErr != nil {
		return 0, nil, apiErr
	}
	id, apiErr := s.authenticate(r)
	if apiErr != nil {
		return 0, nil, apiErr
	}
	if apiErr := s.limited(s.permLimit, opPermission, id.ContainerID); apiErr != nil {
		return 0, nil, apiErr
	}
	evalCtx, apiErr := buildContext(req, id.AgentName)
	if apiErr != nil {
		return 0, nil, apiErr
	}
	v, rule := s.evaluate(r.Context(), evalCtx)
	decision := api.DecisionBlock
	if v.Allowed {
		decision = api.DecisionAllow
	}
	s.m.decisions.WithLabelValues(rule, string(decision)).Inc()
	// Metadata values are never logged: they may hold secrets.
	s.log.Info("agent permission check", "container_id", id.ContainerID, "agent", id.AgentName,
		"action_type", req.ActionType, "target", logTarget(req.Target), "allowed", v.Allowed, "rule", rule)
	return http.StatusOK, v, nil
}

// limited counts a request of containerID against l; over the limit it is
// refused (not recorded), counted and logged under op.
func (s *Server) limited(l *limiter, op, containerID string) *apiError {
	ok, retry := l.allow(containerID)
	if ok {
		return nil
	}
	s.m.rateLimited.WithLabelValues(op).Inc()
	s.log.Warn("agent rate limited", "container_id", containerID, "operation", op)
	return errRateLimited(containerID, retry)
}

// logTarget bounds what of a target goes into a log line.
func logTarget(t string) string {
	const max = 256
	if len(t) > max {
		return t[:max] + "..."
	}
	return t
}

// evaluate decides c within the evaluation timeout, which covers the wait
// for one of the evaluation slots and the evaluation (S004 §2.5). Past it
// the verdict is a deny, "evaluation timeout"; the evaluation is cancelled
// through its context and keeps its slot until it has actually ended, so
// abandoned work stays bounded. An evaluator that fails or panics is a
// deny, "policy evaluation unavailable". rule is the metrics label.
func (s *Server) evaluate(ctx context.Context, c *api.EvaluationContext) (v api.Verdict, rule string) {
	// Returning cancels ctx, which stops an abandoned evaluation.
	ctx, cancel := context.WithTimeout(ctx, s.opts.EvalTimeout)
	defer cancel()
	deny := func(reason, rule string) (api.Verdict, string) {
		return api.Verdict{Allowed: false, Reason: &reason}, rule
	}
	select {
	case s.evals <- struct{}{}:
	case <-ctx.Done():
		return deny(api.ReasonEvalTimeout, ruleTimeout)
	}
	type result struct {
		out rules.Outcome
		err error
	}
	resc := make(chan result, 1)
	go func() {
		defer func() { <-s.evals }()
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("agent permission evaluation panicked", "panic", p)
				resc <- result{err: fmt.Errorf("evaluation panicked: %v", p)}
			}
		}()
		out, err := s.policy.EvaluateContext(ctx, rules.LayerAgent, c)
		resc <- result{out, err}
	}()
	select {
	case res := <-resc:
		switch {
		case res.err != nil && ctx.Err() != nil:
			return deny(api.ReasonEvalTimeout, ruleTimeout)
		case res.err != nil:
			s.log.Error("agent permission evaluation failed", "err", res.err)
			return deny(api.ReasonEvalUnavailable, ruleUnavailable)
		}
		return verdictOf(res.out), res.out.RuleID()
	case <-ctx.Done():
		return deny(api.ReasonEvalTimeout, ruleTimeout)
	}
}

// verdictOf is the agent's view of an outcome: the deciding rule's id
// only, never its body (S004-FR-007/010).
func verdictOf(out rules.Outcome) api.Verdict {
	var v api.Verdict
	if out.Rule != nil {
		id := out.Rule.ID
		v.MatchedRule = &id
	}
	if out.Decision == api.DecisionAllow && out.Err == nil {
		v.Allowed = true
		return v
	}
	reason := api.ReasonBlocked
	v.Reason = &reason
	return v
}

// ruleFileBody is api.RuleRequestSubmission with rule_file required.
type ruleFileBody struct {
	RuleFile *string `json:"rule_file"`
}

// submitRule is POST /v1/requests/rules (S004-IF-003): body, session,
// rate limit, validation (422), a new id and the request on disk (500),
// 201.
func (s *Server) submitRule(r *http.Request) (int, any, *apiError) {
	body, apiErr := readBody(r)
	if apiErr != nil {
		return 0, nil, apiErr
	}
	var b ruleFileBody
	if err := decodeObject(body, &b); err != nil || b.RuleFile == nil {
		return 0, nil, errMalformed
	}
	id, apiErr := s.authenticate(r)
	if apiErr != nil {
		return 0, nil, apiErr
	}
	if apiErr := s.limited(s.ruleLimit, opRuleSubmit, id.ContainerID); apiErr != nil {
		return 0, nil, apiErr
	}
	if err := s.policy.CheckRequest([]byte(*b.RuleFile)); err != nil {
		s.log.Info("agent rule request refused", "container_id", id.ContainerID, "err", err)
		return 0, nil, errInvalid("rule file: %s", agentRuleError(err))
	}
	resp, err := s.requests.Submit(r.Context(), id.ContainerID, *b.RuleFile)
	switch {
	case errors.Is(err, rulereq.ErrInvalidSubmission):
		return 0, nil, errInvalid("rule file: %v", err)
	case err != nil:
		s.log.Error("agent rule request not stored", "container_id", id.ContainerID, "err", err)
		return 0, nil, errPersist
	}
	s.log.Info("agent rule request submitted", "container_id", id.ContainerID, "request_id", resp.ID, "status", resp.Status)
	return http.StatusCreated, resp, nil
}

// requestIDPattern is a rule request id's shape (rr- and 12 lowercase hex).
var requestIDPattern = regexp.MustCompile(`^rr-[0-9a-f]{12}$`)

// ruleStatus is GET /v1/requests/rules/{id} (S004-IF-004): 404 alike for
// an unknown id, a malformed one and another container's, so nothing
// about other containers' requests can be learnt.
func (s *Server) ruleStatus(r *http.Request) (int, any, *apiError) {
	id, apiErr := s.authenticate(r)
	if apiErr != nil {
		return 0, nil, apiErr
	}
	reqID := strings.TrimPrefix(r.URL.Path, api.AgentRouteRuleRequests+"/")
	if !requestIDPattern.MatchString(reqID) {
		return 0, nil, errRequestNotFound
	}
	resp, err := s.requests.Status(r.Context(), id.ContainerID, reqID)
	switch {
	case errors.Is(err, rulereq.ErrNotFound):
		s.log.Info("agent rule request status", "container_id", id.ContainerID, "request_id", reqID, "status", "not_found")
		return 0, nil, errRequestNotFound
	case err != nil:
		s.log.Error("agent rule request status failed", "container_id", id.ContainerID, "err", err)
		return 0, nil, &apiError{http.StatusInternalServerError, "rule request status unavailable", "internal", 0}
	}
	s.log.Info("agent rule request status", "container_id", id.ContainerID, "request_id", reqID, "status", resp.Status)
	return http.StatusOK, resp, nil
}

// agentRuleError is what the agent may read of why its rule file was
// refused: the validator's words when they are about its own file, and
// nothing about the rules in force. A clash names neither the host's file
// nor its line, a problem in a host file (or reading the directory) no
// detail at all (S004-FR-010). The operator's log has the whole error.
func agentRuleError(err error) string {
	var fe *rulefile.Error
	if !errors.As(err, &fe) {
		return "it could not be checked against the rules in force"
	}
	if fe.Field == "id" && strings.Contains(fe.Err.Error(), "duplicate rule ID") {
		return fmt.Sprintf("rule %q: id: the id is already used by a rule in force or in this file", fe.Rule)
	}
	if fe.File != rules.RequestFileName {
		return "it conflicts with the rules in force"
	}
	return err.Error()
}
