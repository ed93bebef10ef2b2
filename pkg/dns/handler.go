package dns

import (
	"context"
	"fmt"
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

// handle runs one message from src through the pipeline of S007 §2.4 and
// returns the reply. udp says the reply goes back over UDP, where it is
// truncated to the client's advertised size. It never panics on any
// input, and a sender gw does not identify gets REFUSED or nothing.
func (f *Filter) handle(ctx context.Context, gw network.Gateway, src netip.Addr, raw []byte, udp bool) result {
	req := new(mdns.Msg)
	if err := req.Unpack(raw); err != nil || req.Response || len(req.Question) != 1 {
		// EC-004: dropped on UDP, closed on TCP. Answering would let a
		// spoofed source use the filter as an amplifier.
		f.metrics.queries.WithLabelValues(outcomeMalformed, ruleNone).Inc()
		f.log.DebugContext(ctx, "malformed DNS message dropped", "src", src.String(), "bytes", len(raw))
		return result{}
	}
	f.total.Add(1)
	q := &query{src: src, upstreamMS: -1}

	// 1. Identity, before anything else can answer.
	ep, ok := gw.Identify(src)
	if !ok {
		f.blocked.Add(1)
		f.metrics.queries.WithLabelValues(outcomeRefused, ruleNone).Inc()
		if n, ok := f.refusedLog.allow(time.Now()); ok {
			f.log.WarnContext(ctx, "DNS query from an unknown sender refused", "src", src.String(), "suppressed", n)
		}
		return f.finish(req, f.rcodeReply(req, mdns.RcodeRefused), udp)
	}
	q.agent, q.identity = ep.Name, ep.Identity
	if req.Opcode != mdns.OpcodeQuery {
		f.metrics.queries.WithLabelValues(outcomeNotimp, ruleNone).Inc()
		return f.finish(req, f.rcodeReply(req, mdns.RcodeNotImplemented), udp)
	}

	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		// RFC 6891 §6.1.3: an EDNS version this server does not speak.
		f.metrics.queries.WithLabelValues(outcomeFormerr, ruleNone).Inc()
		return f.finish(req, f.rcodeReply(req, mdns.RcodeBadVers), udp)
	}

	// 2. Normalise.
	question := req.Question[0]
	q.rtype = typeString(question.Qtype)
	name, ok := normalise(question.Name)
	if !ok {
		f.metrics.queries.WithLabelValues(outcomeFormerr, ruleNone).Inc()
		f.log.DebugContext(ctx, "DNS query name too long or not a host name; FORMERR", "src", src.String(), "agent", ep.Name)
		return f.finish(req, f.rcodeReply(req, mdns.RcodeFormatError), udp)
	}
	q.name = name

	// 3. mDNS names never leave the host, and are not evaluated.
	if name == "local" || strings.HasSuffix(name, ".local") {
		f.blocked.Add(1)
		f.metrics.queries.WithLabelValues(outcomeBlocked, ruleLocal).Inc()
		f.log.DebugContext(ctx, "DNS query", q.attrs("block", ruleLocal)...)
		return f.finish(req, nxdomain(req), udp)
	}

	// 4. Evaluate.
	start := time.Now()
	out, ok := f.evaluate(ctx, &api.EvaluationContext{
		DNS:   &api.DNSContext{Query: name, RecordType: q.rtype},
		Agent: &api.AgentContext{Name: ep.Name},
	})
	if !ok {
		f.metrics.queries.WithLabelValues(outcomeServfail, ruleNone).Inc()
		return f.finish(req, f.rcodeReply(req, mdns.RcodeServerFailure), udp)
	}
	if out.Decision != api.DecisionAllow {
		f.blocked.Add(1)
		f.metrics.queries.WithLabelValues(outcomeBlocked, out.RuleID()).Inc()
		f.log.DebugContext(ctx, "DNS query", q.attrs("block", out.RuleID())...)
		res := f.finish(req, nxdomain(req), udp)
		f.checkBudget(ctx, time.Since(start), q)
		return res
	}
	rule := out.Rule
	var egress api.Egress
	if rule.Egress != nil {
		egress = *rule.Egress
	}
	evalTook := time.Since(start)

	// 5. The answer: the cache, or the upstreams.
	var answer, authority []mdns.RR
	rcode := mdns.RcodeSuccess
	var held time.Time
	key := cacheKey{name: name, qtype: question.Qtype, class: question.Qclass, do: doBit(req)}
	if cached, _, hit := f.cache.get(key); hit {
		answer, held, q.fromCache = cached, time.Now(), true
		// The cache holds the first asker's spelling; echo this one's, for
		// clients that check the case they randomised (0x20).
		for _, rr := range answer {
			if strings.EqualFold(rr.Header().Name, question.Name) {
				rr.Header().Name = question.Name
			}
		}
	} else {
		up := time.Now()
		r, err := f.forward(ctx, req, key)
		q.upstreamMS = time.Since(up).Milliseconds()
		if err != nil {
			f.metrics.queries.WithLabelValues(outcomeServfail, rule.ID).Inc()
			f.log.WarnContext(ctx, "DNS upstream resolution failed; SERVFAIL", append(q.attrs("servfail", rule.ID), "err", err)...)
			return f.finish(req, f.rcodeReply(req, mdns.RcodeServerFailure), udp)
		}
		held = time.Now()
		// r is shared with the queries singleflight joined: copy.
		answer, rcode = copyRRs(r.Answer), r.Rcode
		if rcode == mdns.RcodeSuccess && len(answer) > 0 {
			if ttl := minTTL(answer); ttl > 0 {
				f.cache.put(key, answer, ttl)
			}
		}
		authority = negativeAuthority(r.Ns)
	}
	start = time.Now()

	// 6. The restricted-address filter, on every answer, cached or fresh.
	kept, hadAddr, keptAddr := f.filterAnswer(ctx, q, answer, egress.AllowPrivateIPs)
	if hadAddr && keptAddr == 0 {
		f.blocked.Add(1)
		f.metrics.queries.WithLabelValues(outcomeBlocked, ruleRestricted).Inc()
		f.log.DebugContext(ctx, "DNS query", q.attrs("block", ruleRestricted)...)
		return f.held(f.finish(req, f.rcodeReply(req, mdns.RcodeServerFailure), udp), held)
	}

	// 7. direct_ip: the grants are in the datapath before the answer leaves.
	if egress.Mode == api.EgressDirectIP {
		if err := f.learn(ctx, gw, ep.Identity, src, rule, egress, kept, q); err != nil {
			f.metrics.queries.WithLabelValues(outcomeServfail, rule.ID).Inc()
			f.log.WarnContext(ctx, "direct_ip grants could not be written; SERVFAIL", append(q.attrs("servfail", rule.ID), "err", err)...)
			return f.held(f.finish(req, f.rcodeReply(req, mdns.RcodeServerFailure), udp), held)
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
	f.log.DebugContext(ctx, "DNS query", q.attrs("allow", rule.ID)...)
	res := f.held(f.finish(req, m, udp), held)
	f.checkBudget(ctx, evalTook+time.Since(start), q)
	return res
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
// IPv4 source, every distinct A address of the permitted answer, on the
// rule's ports, for the minimum TTL over the answer's records (CNAMEs
// included) capped at MaxTTL. A zero TTL or no A record writes nothing; an
// IPv6 source gets none (the bridge is IPv4-only).
func (f *Filter) learn(ctx context.Context, gw network.Gateway, identity uint32, src netip.Addr, rule *rules.Rule, egress api.Egress, kept []mdns.RR, q *query) error {
	if !src.Is4() {
		f.log.DebugContext(ctx, "direct_ip answer to a non-IPv4 source; no grant", "rule", rule.ID, "agent", q.agent)
		return nil
	}
	var dsts []netip.Addr
	for _, rr := range kept {
		if a, ok := rr.(*mdns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A); ok {
				dsts = append(dsts, ip.Unmap())
			}
		}
	}
	slices.SortFunc(dsts, netip.Addr.Compare)
	dsts = slices.Compact(dsts)
	ttl := minTTL(kept)
	if len(dsts) == 0 || ttl == 0 {
		if len(kept) > 0 {
			f.log.DebugContext(ctx, "direct_ip answer with no IPv4 address or a zero TTL; no grant", "rule", rule.ID, "agent", q.agent)
		}
		return nil
	}
	ports := slices.Clone(egress.Ports)
	if err := gw.Learn(identity, network.Learned{
		Rule:         rule.ID,
		Dsts:         dsts,
		Ports:        ports,
		TTL:          time.Duration(ttl) * time.Second,
		AllowPrivate: egress.AllowPrivateIPs,
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
// spells types 0 and 65535 "None" and "Reserved"), or TYPEn.
func typeString(t uint16) string {
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
