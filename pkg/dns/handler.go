package dns

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/netrange"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/rules"
)

// result is what handle decided for one message: the reply to write (nil:
// send nothing; on TCP, close) and, for an answer that came from an
// upstream or the cache, when it did, so that the time it is held until
// written (grant writes included) is measured.
type result struct {
	reply []byte
	held  time.Time
}

func (r result) observeHold(f *Filter) {
	if !r.held.IsZero() {
		f.metrics.holdSeconds.Observe(time.Since(r.held).Seconds())
	}
}

// observeHoldAt is observeHold for a reply written by now.
func (r result) observeHoldAt(f *Filter, now time.Time) {
	if !r.held.IsZero() {
		f.metrics.holdSeconds.Observe(now.Sub(r.held).Seconds())
	}
}

// soa is the authority record of every NXDOMAIN the filter makes itself
// (S007 §2.5).
func soa() *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: "outcall.invalid.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 60},
		Ns:      "ns.outcall.invalid.",
		Mbox:    "hostmaster.outcall.invalid.",
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  60,
	}
}

// logLimiter lets one warning through per second and counts the ones it
// held back, so that a flood from unknown senders cannot flood the log.
type logLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

// allow reports whether a warning may be logged at now, and how many were
// suppressed since the last one.
func (l *logLimiter) allow(now time.Time) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < time.Second {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}

// query is one query on its way through the pipeline, for its log line.
type query struct {
	src        netip.Addr
	agent      string
	identity   uint32
	name       string
	rtype      string
	fromCache  bool
	upstreamMS int64
}

func (q *query) attrs(decision, rule string) []any {
	a := []any{"src", q.src.String(), "agent", q.agent, "identity", q.identity,
		"host", q.name, "record_type", q.rtype, "decision", decision, "rule", rule, "from_cache", q.fromCache}
	if !q.fromCache && q.upstreamMS >= 0 {
		a = append(a, "upstream_ms", q.upstreamMS)
	}
	return a
}

// pendingQuery is a query decided and allowed whose answer is not in the
// cache: what complete needs to fetch it upstream and reply.
type pendingQuery struct {
	req      *mdns.Msg
	src      netip.Addr
	q        query
	rule     *rules.Rule
	egress   api.Egress
	key      cacheKey
	udp      bool
	evalTook time.Duration
}

// handle runs one message from src through the pipeline of S007 §2.4 and
// returns the reply. udp says the reply goes back over UDP, where it is
// truncated to the client's advertised size. It never panics on any
// input, and a sender gw does not identify gets REFUSED or nothing.
func (f *Filter) handle(ctx context.Context, gw network.Gateway, src netip.Addr, raw []byte, udp bool) result {
	res, p := f.decide(ctx, gw, src, raw, udp)
	if p != nil {
		return f.complete(ctx, gw, p)
	}
	return res
}

// decide runs the pipeline up to the upstreams: it returns the reply of
// every query it can answer without waiting on the network (malformed,
// refused, blocked, a cache hit), or the pending query that needs an
// upstream (complete). raw is not used once it returns.
func (f *Filter) decide(ctx context.Context, gw network.Gateway, src netip.Addr, raw []byte, udp bool) (result, *pendingQuery) {
	req := new(mdns.Msg)
	if err := req.Unpack(raw); err != nil || req.Response || len(req.Question) != 1 {
		// EC-004: dropped on UDP, closed on TCP. Answering would let a
		// spoofed source use the filter as an amplifier.
		f.metrics.queries.WithLabelValues(outcomeMalformed, ruleNone).Inc()
		f.log.DebugContext(ctx, "malformed DNS message dropped", "src", src.String(), "bytes", len(raw))
		return result{}, nil
	}
	f.total.Add(1)
	// p lives on the stack unless the query goes upstream.
	p := pendingQuery{req: req, src: src, udp: udp, q: query{src: src, upstreamMS: -1}}
	q := &p.q

	// 1. Identity, before anything else can answer.
	ep, ok := gw.Identify(src)
	if !ok {
		f.blocked.Add(1)
		f.metrics.queries.WithLabelValues(outcomeRefused, ruleNone).Inc()
		if n, ok := f.refusedLog.allow(time.Now()); ok {
			f.log.WarnContext(ctx, "DNS query from an unknown sender refused", "src", src.String(), "suppressed", n)
		}
		return f.finish(req, f.rcodeReply(req, mdns.RcodeRefused), udp), nil
	}
	q.agent, q.identity = ep.Name, ep.Identity
	if req.Opcode != mdns.OpcodeQuery {
		f.metrics.queries.WithLabelValues(outcomeNotimp, ruleNone).Inc()
		return f.finish(req, f.rcodeReply(req, mdns.RcodeNotImplemented), udp), nil
	}

	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		// RFC 6891 §6.1.3: an EDNS version this server does not speak.
		f.metrics.queries.WithLabelValues(outcomeFormerr, ruleNone).Inc()
		return f.finish(req, f.rcodeReply(req, mdns.RcodeBadVers), udp), nil
	}

	// 2. Normalise.
	question := req.Question[0]
	q.rtype = typeString(question.Qtype)
	name, ok := normalise(question.Name)
	if !ok {
		f.metrics.queries.WithLabelValues(outcomeFormerr, ruleNone).Inc()
		f.log.DebugContext(ctx, "DNS query name too long or not a host name; FORMERR", "src", src.String(), "agent", ep.Name)
		return f.finish(req, f.rcodeReply(req, mdns.RcodeFormatError), udp), nil
	}
	q.name = name

	// 3. mDNS names never leave the host, and are not evaluated.
	if name == "local" || strings.HasSuffix(name, ".local") {
		f.blocked.Add(1)
		f.metrics.queries.WithLabelValues(outcomeBlocked, ruleLocal).Inc()
		f.debugQuery(ctx, q, "block", ruleLocal)
		return f.finish(req, nxdomain(req), udp), nil
	}

	// 4. Evaluate, or remember the decision of the rule set in force.
	start := time.Now()
	out, ok := f.decideRules(ctx, ep.Identity, ep.AgentName(), name, question.Qtype, q.rtype)
	if !ok {
		f.metrics.queries.WithLabelValues(outcomeServfail, ruleNone).Inc()
		return f.finish(req, f.rcodeReply(req, mdns.RcodeServerFailure), udp), nil
	}
	if out.Decision != api.DecisionAllow {
		f.blocked.Add(1)
		f.metrics.queries.WithLabelValues(outcomeBlocked, out.RuleID()).Inc()
		f.debugQuery(ctx, q, "block", out.RuleID())
		res := f.finish(req, nxdomain(req), udp)
		f.checkBudget(ctx, time.Since(start), q)
		return res, nil
	}
	p.rule = out.Rule
	if p.rule.Egress != nil {
		p.egress = *p.rule.Egress
	}
	decided := time.Now()
	p.evalTook = decided.Sub(start)

	// 5. The answer: the cache, or (complete) the upstreams.
	p.key = cacheKey{name: name, qtype: question.Qtype, class: question.Qclass, do: doBit(req)}
	var now time.Time // the cache's clock: decided's reading, if it is time.Now
	if f.realClock {
		now = decided
	}
	if e, left, hit := f.cache.get(p.key, now); hit {
		return f.answerCached(ctx, gw, &p, e, left, decided), nil
	}
	up := new(pendingQuery)
	*up = p
	return result{}, up
}

// complete fetches p's answer from the upstreams and replies.
func (f *Filter) complete(ctx context.Context, gw network.Gateway, p *pendingQuery) result {
	q, req, rule := &p.q, p.req, p.rule
	up := time.Now()
	r, err := f.forward(ctx, req, p.key)
	q.upstreamMS = time.Since(up).Milliseconds()
	if err != nil {
		f.metrics.queries.WithLabelValues(outcomeServfail, rule.ID).Inc()
		f.log.WarnContext(ctx, "DNS upstream resolution failed; SERVFAIL", append(q.attrs("servfail", rule.ID), "err", err)...)
		return f.finish(req, f.rcodeReply(req, mdns.RcodeServerFailure), p.udp)
	}
	held := time.Now()
	// r is shared with the queries singleflight joined: copy.
	answer, rcode := copyRRs(r.Answer), r.Rcode
	if rcode == mdns.RcodeSuccess && len(answer) > 0 {
		if ttl := minTTL(answer); ttl > 0 {
			f.cache.put(p.key, answer, ttl)
		}
	}
	return f.release(ctx, gw, p, answer, rcode, negativeAuthority(r.Ns), held)
}

// answerCached replies to p from the cache entry e, which has left
// seconds to live: steps 6 to 8 of release on the entry's shared records,
// with the packed reply reused while nothing it was built from changed.
// The filter, the egress mode and the grants are applied on every hit.
// held is when the hit was found (just before the lookup).
func (f *Filter) answerCached(ctx context.Context, gw network.Gateway, p *pendingQuery, e *cacheEntry, left uint32, held time.Time) result {
	q, req, rule := &p.q, p.req, p.rule
	q.fromCache = true
	if len(e.answer) > 64 {
		// More records than bits in packedReply.kept: the general path.
		return f.release(ctx, gw, p, e.copyAt(left), mdns.RcodeSuccess, nil, held)
	}
	start := held

	// 6. The restricted-address filter.
	var kept uint64
	hadAddr, keptAddr := false, 0
	for i, ip := range e.addrs {
		if !ip.IsValid() {
			kept |= 1 << i
			continue
		}
		hadAddr = true
		if !p.egress.AllowPrivateIPs && f.restricted(ip) {
			f.log.InfoContext(ctx, "restricted address removed from a DNS answer",
				"host", q.name, "dropped_ip", ip.String(), "reason", "restricted_ip", "agent", q.agent)
			continue
		}
		kept |= 1 << i
		keptAddr++
	}
	if hadAddr && keptAddr == 0 {
		return f.restrictedOnly(ctx, p, held)
	}

	// 7. direct_ip: every kept record has left seconds (at most MaxTTL).
	if p.egress.Mode == api.EgressDirectIP {
		var dsts []netip.Addr
		for i, ip := range e.addrs {
			if kept&(1<<i) != 0 && ip.Is4() && e.answer[i].Header().Rrtype == mdns.TypeA {
				dsts = append(dsts, ip)
			}
		}
		if err := f.learn(ctx, gw, p, dsts, left, kept != 0); err != nil {
			f.metrics.queries.WithLabelValues(outcomeServfail, rule.ID).Inc()
			f.log.WarnContext(ctx, "direct_ip grants could not be written; SERVFAIL", append(q.attrs("servfail", rule.ID), "err", err)...)
			return f.held(f.finish(req, f.rcodeReply(req, mdns.RcodeServerFailure), p.udp), held)
		}
	}

	// 8. The permitted records, packed again only when the TTL, the kept
	// records or the request's shape changed since the last hit.
	shape := shapeOf(req, p.udp)
	var res result
	took := p.evalTook // a reused reply costs a copy: not timed
	if pr := e.packed.Load(); pr != nil && pr.left == left && pr.kept == kept && pr.shape == shape {
		res.reply = make([]byte, len(pr.wire))
		copy(res.reply, pr.wire)
		binary.BigEndian.PutUint16(res.reply, req.Id)
	} else {
		answer := make([]mdns.RR, 0, len(e.answer))
		for i, rr := range e.answer {
			if kept&(1<<i) == 0 {
				continue
			}
			rr = mdns.Copy(rr)
			rr.Header().Ttl = left
			// The cache holds the first asker's spelling; echo this
			// one's, for clients that check the case they randomised
			// (0x20).
			if strings.EqualFold(rr.Header().Name, req.Question[0].Name) {
				rr.Header().Name = req.Question[0].Name
			}
			answer = append(answer, rr)
		}
		m := new(mdns.Msg)
		m.SetRcode(req, mdns.RcodeSuccess)
		m.RecursionAvailable = true
		m.Answer = answer
		res = f.finish(req, m, p.udp)
		if res.reply != nil {
			e.packed.Store(&packedReply{left: left, kept: kept, shape: shape, wire: res.reply})
			res.reply = slices.Clone(res.reply)
		}
		took += time.Since(start)
	}
	f.allowed.Add(1)
	f.metrics.allowedBy(rule.ID).Inc()
	f.debugQuery(ctx, q, "allow", rule.ID)
	res.held = held
	f.checkBudget(ctx, took, q)
	return res
}

// shapeOf is req's replyShape.
func shapeOf(req *mdns.Msg, udp bool) replyShape {
	s := replyShape{qname: req.Question[0].Name, rd: req.RecursionDesired, cd: req.CheckingDisabled, udp: udp}
	if opt := req.IsEdns0(); opt != nil {
		s.edns, s.do, s.size = true, opt.Do(), opt.UDPSize()
	}
	return s
}

// restrictedOnly answers an answer whose every address the
// restricted-address filter dropped: SERVFAIL, counted as a block.
func (f *Filter) restrictedOnly(ctx context.Context, p *pendingQuery, held time.Time) result {
	f.blocked.Add(1)
	f.metrics.queries.WithLabelValues(outcomeBlocked, ruleRestricted).Inc()
	f.debugQuery(ctx, &p.q, "block", ruleRestricted)
	return f.held(f.finish(p.req, f.rcodeReply(p.req, mdns.RcodeServerFailure), p.udp), held)
}

// release applies steps 6 to 8 to an answer, fresh or cached (then a copy
// with its TTLs counted down), and replies.
func (f *Filter) release(ctx context.Context, gw network.Gateway, p *pendingQuery, answer []mdns.RR, rcode int, authority []mdns.RR, held time.Time) result {
	q, req, rule := &p.q, p.req, p.rule
	start := time.Now()

	// 6. The restricted-address filter, on every answer, cached or fresh.
	kept, hadAddr, keptAddr := f.filterAnswer(ctx, q, answer, p.egress.AllowPrivateIPs)
	if hadAddr && keptAddr == 0 {
		return f.restrictedOnly(ctx, p, held)
	}

	// 7. direct_ip: the grants are in the datapath before the answer leaves.
	if p.egress.Mode == api.EgressDirectIP {
		var dsts []netip.Addr
		for _, rr := range kept {
			if a, ok := rr.(*mdns.A); ok {
				if ip, ok := netip.AddrFromSlice(a.A); ok {
					dsts = append(dsts, ip.Unmap())
				}
			}
		}
		if err := f.learn(ctx, gw, p, dsts, minTTL(kept), len(kept) > 0); err != nil {
			f.metrics.queries.WithLabelValues(outcomeServfail, rule.ID).Inc()
			f.log.WarnContext(ctx, "direct_ip grants could not be written; SERVFAIL", append(q.attrs("servfail", rule.ID), "err", err)...)
			return f.held(f.finish(req, f.rcodeReply(req, mdns.RcodeServerFailure), p.udp), held)
		}
	}

	// 8. The permitted records. Upstream NXDOMAIN and NODATA pass through
	// with the upstream's authority (its SOA, for negative caching);
	// a positive answer carries the answer section only.
	m := new(mdns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	m.Answer = kept
	if len(kept) == 0 || rcode != mdns.RcodeSuccess {
		m.Ns = authority
	}
	f.allowed.Add(1)
	f.metrics.queries.WithLabelValues(outcomeAllowed, rule.ID).Inc()
	f.debugQuery(ctx, q, "allow", rule.ID)
	res := f.held(f.finish(req, m, p.udp), held)
	f.checkBudget(ctx, p.evalTook+time.Since(start), q)
	return res
}

// debugQuery logs a query's decision at debug, building the line only when
// it is logged.
func (f *Filter) debugQuery(ctx context.Context, q *query, decision, rule string) {
	if f.log.Enabled(ctx, slog.LevelDebug) {
		f.log.DebugContext(ctx, "DNS query", q.attrs(decision, rule)...)
	}
}

func (f *Filter) held(r result, at time.Time) result {
	r.held = at
	return r
}

func (f *Filter) checkBudget(ctx context.Context, took time.Duration, q *query) {
	if took > EvaluationBudget {
		f.log.WarnContext(ctx, "DNS evaluation and response exceeded the latency budget",
			"took", took, "budget", EvaluationBudget, "agent", q.agent)
	}
}

// decideRules is the rules' outcome for a query: the decision cache's
// while it holds one of the set in force, else the engine's (evaluate).
// The set is read before the engine evaluates, so that an outcome is never
// filed under a set newer than the one that made it.
func (f *Filter) decideRules(ctx context.Context, identity uint32, agent, name string, qtype uint16, rtype string) (rules.Outcome, bool) {
	sets, ok := f.opts.Rules.(RuleSets)
	var set *rules.Set
	k := decisionKey{identity: identity, agent: agent, name: name, qtype: qtype}
	if ok {
		set = sets.Active()
		if out, ok := f.decisions.get(k, set); ok {
			if f.opts.Observer != nil {
				f.opts.Observer.ObserveDecision(string(rules.LayerDNS), ruleLabel(out), out.Decision)
			}
			return out, true
		}
	}
	out, ok := f.evaluate(ctx, &api.EvaluationContext{
		DNS:   &api.DNSContext{Query: name, RecordType: rtype},
		Agent: &api.AgentContext{Name: agent},
	})
	if ok && set != nil {
		f.decisions.put(k, set, out)
	}
	return out, ok
}

// ruleLabel is the rule_id label the engine reports a decision under.
func ruleLabel(out rules.Outcome) string {
	if out.Rule != nil {
		return out.Rule.ID
	}
	return rules.DefaultRuleLabel
}

// evaluate asks the rule engine; ok is false when the engine failed (it
// panicked, or returned an allow without a rule or a decision that is
// neither), which is SERVFAIL (S007-FR-032). A rule whose condition errors
// is the engine's block, naming the rule (DESIGN §7), and so NXDOMAIN.
func (f *Filter) evaluate(ctx context.Context, c *api.EvaluationContext) (out rules.Outcome, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			f.log.ErrorContext(ctx, "rule engine failed; SERVFAIL", "panic", fmt.Sprint(p))
			ok = false
		}
	}()
	out = f.opts.Rules.Evaluate(ctx, rules.LayerDNS, c)
	switch out.Decision {
	case api.DecisionAllow:
		if out.Rule == nil {
			f.log.ErrorContext(ctx, "rule engine allowed without a rule; SERVFAIL")
			return out, false
		}
		return out, true
	case api.DecisionBlock:
		return out, true
	}
	f.log.ErrorContext(ctx, "rule engine returned no decision; SERVFAIL", "decision", out.Decision)
	return out, false
}

// forward resolves req's question upstream, joining a query for the same
// key already in flight (EC-010). The upstream sees the client's question,
// RD and CD bits and OPT record (DO bit included, AS-014), under a new ID.
func (f *Filter) forward(ctx context.Context, req *mdns.Msg, key cacheKey) (*mdns.Msg, error) {
	fq := new(mdns.Msg)
	fq.Opcode = mdns.OpcodeQuery
	fq.RecursionDesired = req.RecursionDesired
	fq.CheckingDisabled = req.CheckingDisabled
	fq.Question = []mdns.Question{req.Question[0]}
	if opt := req.IsEdns0(); opt != nil {
		fq.Extra = []mdns.RR{mdns.Copy(opt)}
	}
	flightKey := key.name + "|" + strconv.Itoa(int(key.qtype)) + "|" + strconv.Itoa(int(key.class)) + "|" + strconv.FormatBool(key.do)
	v, err, _ := f.flight.Do(flightKey, func() (any, error) { return f.resolve(ctx, fq) })
	if err != nil {
		return nil, err
	}
	return v.(*mdns.Msg), nil
}

// filterAnswer drops the A and AAAA records whose address is restricted,
// unless the rule allows private addresses (S007-FR-034). It reports
// whether the answer held any address record and how many it keeps. Other
// records, CNAMEs and DNSSEC records among them, pass unchanged.
func (f *Filter) filterAnswer(ctx context.Context, q *query, answer []mdns.RR, allowPrivate bool) (kept []mdns.RR, hadAddr bool, keptAddr int) {
	kept = make([]mdns.RR, 0, len(answer))
	for _, rr := range answer {
		ip, isAddr := addrOfRR(rr)
		if !isAddr {
			kept = append(kept, rr)
			continue
		}
		hadAddr = true
		if !allowPrivate && f.restricted(ip) {
			f.log.InfoContext(ctx, "restricted address removed from a DNS answer",
				"host", q.name, "dropped_ip", ip.String(), "reason", "restricted_ip", "agent", q.agent)
			continue
		}
		kept = append(kept, rr)
		keptAddr++
	}
	return kept, hadAddr, keptAddr
}

func (f *Filter) restricted(ip netip.Addr) bool {
	if _, ok := netrange.RangeOfAddr(ip); ok {
		return true
	}
	return f.opts.Restricted != nil && f.opts.Restricted(ip)
}

// learn writes the grants of a direct_ip answer (S007-FR-037..040): for an
// IPv4 source, every distinct A address of the permitted answer (dsts),
// on the rule's ports, for ttl, the minimum TTL over the permitted records
// (CNAMEs included) capped at MaxTTL. A zero TTL or no A record writes
// nothing; an IPv6 source gets none (the bridge is IPv4-only). anyKept
// says the permitted answer has records at all.
func (f *Filter) learn(ctx context.Context, gw network.Gateway, p *pendingQuery, dsts []netip.Addr, ttl uint32, anyKept bool) error {
	rule, q := p.rule, &p.q
	if !p.src.Is4() {
		f.log.DebugContext(ctx, "direct_ip answer to a non-IPv4 source; no grant", "rule", rule.ID, "agent", q.agent)
		return nil
	}
	slices.SortFunc(dsts, netip.Addr.Compare)
	dsts = slices.Compact(dsts)
	if len(dsts) == 0 || ttl == 0 {
		if anyKept {
			f.log.DebugContext(ctx, "direct_ip answer with no IPv4 address or a zero TTL; no grant", "rule", rule.ID, "agent", q.agent)
		}
		return nil
	}
	ports := slices.Clone(p.egress.Ports)
	if err := gw.Learn(q.identity, network.Learned{
		Rule:         rule.ID,
		Dsts:         dsts,
		Ports:        ports,
		TTL:          time.Duration(ttl) * time.Second,
		AllowPrivate: p.egress.AllowPrivateIPs,
	}); err != nil {
		return err
	}
	n := len(ports)
	if n == 0 {
		n = len(network.DefaultDirectPorts)
	}
	f.metrics.grants.WithLabelValues(rule.ID).Add(float64(len(dsts) * n))
	return nil
}

// rcodeReply is a reply with only the question and rcode: SERVFAIL,
// REFUSED, FORMERR, NOTIMP. RA is set on all of them (IF-006), REFUSED
// included, unlike the Rust build.
func (f *Filter) rcodeReply(req *mdns.Msg, rcode int) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	return m
}

// nxdomain is a block: NXDOMAIN, authoritative, Outcall's SOA (S007-FR-010).
func nxdomain(req *mdns.Msg) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(req, mdns.RcodeNameError)
	m.Authoritative = true
	m.RecursionAvailable = true
	m.Ns = []mdns.RR{soa()}
	return m
}

// finish adds the OPT record a client that sent one expects, truncates a
// UDP reply to the client's advertised size (512 without EDNS, EC-011), so
// that TC sends it to TCP, and packs it.
func (f *Filter) finish(req, m *mdns.Msg, udp bool) result {
	// SetReply copies RD only for a QUERY; the spec echoes it always.
	m.RecursionDesired = req.RecursionDesired
	size := mdns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), mdns.MinMsgSize)
		m.SetEdns0(uint16(size), opt.Do())
	}
	if !udp {
		size = mdns.MaxMsgSize
	}
	m.Truncate(size)
	b, err := m.Pack()
	if err != nil {
		f.log.Debug("DNS reply could not be packed; dropped", "err", err)
		return result{}
	}
	return result{reply: b}
}

// normalise is the name the rules and the cache see (S007-FR-008):
// lowercase, no trailing dot. A name whose presentation form needs an
// escape (a byte outside printable ASCII, such as raw UTF-8 instead of an
// IDN's A-labels, or a dot or space inside a label) or that is longer than
// 253 characters is refused: rules must never see odd bytes (EC-009,
// spec §4.3).
func normalise(qname string) (string, bool) {
	if strings.ContainsRune(qname, '\\') {
		return "", false
	}
	name := strings.TrimSuffix(qname, ".")
	if len(name) > maxNameLen {
		return "", false
	}
	return strings.ToLower(name), true
}

// typeString is dns.record_type: the type's mnemonic in upper case (miekg
// spells types 0 and 65535 "None" and "Reserved"), or TYPEn. The types
// below 256 (every common one) are spelled once, not per query.
func typeString(t uint16) string {
	if int(t) < len(lowTypeStrings) {
		return lowTypeStrings[t]
	}
	return spellType(t)
}

var lowTypeStrings = func() (a [256]string) {
	for t := range a {
		a[t] = spellType(uint16(t))
	}
	return a
}()

func spellType(t uint16) string {
	if s, ok := mdns.TypeToString[t]; ok {
		return strings.ToUpper(s)
	}
	return "TYPE" + strconv.Itoa(int(t))
}

func doBit(m *mdns.Msg) bool {
	opt := m.IsEdns0()
	return opt != nil && opt.Do()
}

func addrOfRR(rr mdns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *mdns.A:
		ip, ok := netip.AddrFromSlice(rr.A)
		if ok && ip.Is4In6() {
			ip = ip.Unmap()
		}
		return ip, ok
	case *mdns.AAAA:
		ip, ok := netip.AddrFromSlice(rr.AAAA)
		return ip, ok
	}
	return netip.Addr{}, false
}

// minTTL is the smallest TTL of rrs, capped at MaxTTL, in seconds; 0 for
// no records.
func minTTL(rrs []mdns.RR) uint32 {
	if len(rrs) == 0 {
		return 0
	}
	m := uint32(MaxTTL / time.Second)
	for _, rr := range rrs {
		m = min(m, rr.Header().Ttl)
	}
	return m
}

// negativeAuthority is what of an upstream's authority section a negative
// answer (NXDOMAIN, NODATA) passes on: the SOA that bounds the client's
// negative caching and the DNSSEC records that prove the denial. Anything
// else, an address record above all, stays behind: the address filter
// looks at the answer section only.
func negativeAuthority(rrs []mdns.RR) []mdns.RR {
	var out []mdns.RR
	for _, rr := range rrs {
		switch rr.Header().Rrtype {
		case mdns.TypeSOA, mdns.TypeNSEC, mdns.TypeNSEC3, mdns.TypeRRSIG:
			out = append(out, mdns.Copy(rr))
		}
	}
	return out
}

func copyRRs(rrs []mdns.RR) []mdns.RR {
	if rrs == nil {
		return nil
	}
	out := make([]mdns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = mdns.Copy(rr)
	}
	return out
}
