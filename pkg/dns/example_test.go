package dns_test

import (
	"log/slog"

	"outcall.dev/outcall/pkg/dns"
	"outcall.dev/outcall/pkg/rules"
)

// A daemon builds one Filter from its flags and runs its Serve on every
// network's gateway; after every successful rule reload it calls Flush.
func Example() {
	ups, err := dns.ParseUpstreams("192.0.2.53:53,[2001:db8::53]:53") // --dns-upstream
	if err != nil {
		panic(err) // names the bad entry
	}
	engine, err := rules.NewEngine(rules.Options{Dir: "/etc/outcall/rules.d"})
	if err != nil {
		panic(err)
	}
	f, err := dns.New(dns.Options{Upstreams: ups, Rules: engine, Logger: slog.Default()})
	if err != nil {
		panic(err)
	}
	_ = f.Collectors() // registered with the daemon's Prometheus registry
	// For each network whose bridge is up: go f.Serve(ctx, gateway).
	// The proxy resolves through the same upstreams, with
	// f.LookupIPv4(ctx, host). (This example has no Output, so it is
	// compiled, never run: it sends nothing.)
}
