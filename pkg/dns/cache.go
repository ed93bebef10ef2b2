package dns

import (
	"container/list"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// cacheKey is what an answer is cached under: the normalised name and the
// type (S007-FR-016), plus the class and the DO bit, so that a query that
// asked for DNSSEC records never gets an answer fetched without them.
type cacheKey struct {
	name  string
	qtype uint16
	class uint16
	do    bool
}

// cacheEntry is one raw, unfiltered upstream answer: the restricted-address
// filter and the egress mode are applied on every hit, under the rules in
// force then (S007-FR-034, EC-016). answer and addrs never change once the
// entry is stored: a hit reads them without a copy.
type cacheEntry struct {
	key    cacheKey
	answer []mdns.RR
	// addrs[i] is the address of answer[i], invalid for a record that is
	// not an A or AAAA record.
	addrs []netip.Addr
	// ttl is min(answer TTLs, DNS_CACHE_MAX_TTL_SECS), in seconds.
	ttl    uint32
	stored time.Time
	// packed is the last reply built from the entry, reused while the
	// next hit would build the same bytes (see packedReply).
	packed atomic.Pointer[packedReply]
}

// packedReply is a reply to a cache hit as finish packed it, and what it
// was built from besides the entry: the TTL left, the records the
// restricted-address filter kept (a bit per record) and the request's
// shape. A hit with the same three gets the same bytes under its own ID:
// the reply is packed by miekg/dns once a second per name and shape.
type packedReply struct {
	left  uint32
	kept  uint64
	shape replyShape
	wire  []byte
}

// replyShape is what of a request a reply to a cache hit depends on, the
// ID aside: the question as the client spelled it (0x20), the RD and CD
// bits it echoes, its EDNS record's size and DO bit, and the transport,
// which decides truncation. The type and class are the entry's key.
type replyShape struct {
	qname    string
	rd, cd   bool
	edns, do bool
	size     uint16
	udp      bool
}

// copyAt returns a copy of e's records with their TTLs set to left.
func (e *cacheEntry) copyAt(left uint32) []mdns.RR {
	out := make([]mdns.RR, len(e.answer))
	for i, rr := range e.answer {
		out[i] = mdns.Copy(rr)
		out[i].Header().Ttl = left
	}
	return out
}

// remaining is what is left of e's TTL at now, counting down in whole
// seconds; 0 means expired.
func (e *cacheEntry) remaining(now time.Time) uint32 {
	elapsed := now.Sub(e.stored)
	if elapsed < 0 {
		elapsed = 0
	}
	secs := uint64(elapsed / time.Second)
	if secs >= uint64(e.ttl) {
		return 0
	}
	return e.ttl - uint32(secs)
}

// cache is a bounded LRU of answers (S007-FR-019); a full cache evicts,
// never refuses (EC-007).
type cache struct {
	mu        sync.Mutex
	max       int
	ll        *list.List // of *cacheEntry, most recently used first
	items     map[cacheKey]*list.Element
	hits      uint64
	misses    uint64
	evictions uint64
	now       func() time.Time
}

func newCache(max int, now func() time.Time) *cache {
	return &cache{max: max, ll: list.New(), items: map[cacheKey]*list.Element{}, now: now}
}

// get returns the entry under k and the seconds its answer has left at
// now (a reading of the cache's clock the caller already took; zero: read
// it), or false (a miss) when there is none or it expired. The entry's
// records are shared: callers copy before they change one
// (cacheEntry.copyAt).
func (c *cache) get(k cacheKey, now time.Time) (*cacheEntry, uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		c.misses++
		return nil, 0, false
	}
	e := el.Value.(*cacheEntry)
	if now.IsZero() {
		now = c.now()
	}
	left := e.remaining(now)
	if left == 0 {
		c.ll.Remove(el)
		delete(c.items, k)
		c.misses++
		return nil, 0, false
	}
	c.ll.MoveToFront(el)
	c.hits++
	return e, left, true
}

// put stores answer under k for ttl seconds and reports whether it evicted
// another entry. The records are copied: callers may go on using theirs.
func (c *cache) put(k cacheKey, answer []mdns.RR, ttl uint32) (evicted bool) {
	cp := make([]mdns.RR, len(answer))
	addrs := make([]netip.Addr, len(answer))
	for i, rr := range answer {
		cp[i] = mdns.Copy(rr)
		addrs[i], _ = addrOfRR(rr)
	}
	e := &cacheEntry{key: k, answer: cp, addrs: addrs, ttl: ttl, stored: c.now()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return false
	}
	c.items[k] = c.ll.PushFront(e)
	if c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
		c.evictions++
		return true
	}
	return false
}

// flush empties the cache and returns how many entries it held.
func (c *cache) flush() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.ll.Len()
	c.ll.Init()
	c.items = map[cacheKey]*list.Element{}
	return n
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// snapshot returns the live entries, most recently used first, with their
// remaining TTLs.
func (c *cache) snapshot() []cacheView {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	var out []cacheView
	for el := c.ll.Front(); el != nil; el = el.Next() {
		e := el.Value.(*cacheEntry)
		if left := e.remaining(now); left > 0 {
			out = append(out, cacheView{key: e.key, left: left, stored: e.stored})
		}
	}
	return out
}

type cacheView struct {
	key    cacheKey
	left   uint32
	stored time.Time
}

func (c *cache) stats() (hits, misses, evictions uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses, c.evictions
}
