package dns

import (
	"context"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzHandleQuery feeds arbitrary bytes through the handler, from a known
// and from an unknown sender, over UDP and TCP. It must never panic; an
// unknown sender gets REFUSED or nothing; any reply parses, is a response
// to the same ID, and fits the UDP size the client may receive.
func FuzzHandleQuery(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed, false, true)
	}
	fx := newFixture(f, nil)
	f.Fuzz(func(t *testing.T, raw []byte, known, udp bool) {
		src := strangerIP
		if known {
			src = agentIP
		}
		res := fx.f.handle(context.Background(), fx.gw, src, raw, udp)
		if res.reply == nil {
			return
		}
		r := new(mdns.Msg)
		if err := r.Unpack(res.reply); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		req := new(mdns.Msg)
		if err := req.Unpack(raw); err != nil {
			t.Fatalf("answered a message that does not parse: %v", err)
		}
		if !r.Response || r.Id != req.Id {
			t.Fatalf("reply QR %v id %d to query id %d", r.Response, r.Id, req.Id)
		}
		if !known && (r.Rcode != mdns.RcodeRefused || len(r.Answer)+len(r.Ns) != 0) {
			t.Fatalf("unknown sender got %s with %d records; want REFUSED only", mdns.RcodeToString[r.Rcode], len(r.Answer)+len(r.Ns))
		}
		if udp {
			size := mdns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				size = max(int(opt.UDPSize()), mdns.MinMsgSize)
			}
			if len(res.reply) > size {
				t.Fatalf("UDP reply of %d bytes to a client that takes %d", len(res.reply), size)
			}
		}
	})
}

func fuzzSeeds() [][]byte {
	var out [][]byte
	add := func(m *mdns.Msg) {
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	add(question("www.example.test.", mdns.TypeA))
	add(question("Printer.local.", mdns.TypeA))
	add(question("big.example.test.", mdns.TypeTXT))
	e := question("alias.example.test.", mdns.TypeA)
	e.SetEdns0(1232, true)
	add(e)
	add(question("a\\.b.example.test.", mdns.TypeA))
	out = append(out, []byte{}, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	return out
}
