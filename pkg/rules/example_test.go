package rules_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rules"
)

func ExampleEngine() {
	dir, _ := os.MkdirTemp("", "rules")
	defer os.RemoveAll(dir)
	_ = os.WriteFile(filepath.Join(dir, "00-base.yaml"), []byte(`version: "1"
rules:
  - id: pypi
    condition: dns.query in ["pypi.org", "files.pythonhosted.org"]
    action: allow
    egress: {mode: direct_ip, ports: [443]}
  - id: internal-db
    condition: cidr("10.20.0.0/16").containsIP(network.ip) && network.port == 5432
    action: allow
`), 0o600)

	e, err := rules.NewEngine(rules.Options{Dir: dir})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	res, err := e.Reload(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d rules, %d lowered into the datapath\n", res.RulesLoaded, res.PacketRules)

	for _, q := range []string{"pypi.org", "evil.example.com"} {
		out := e.Evaluate(ctx, rules.LayerDNS, &api.EvaluationContext{DNS: &api.DNSContext{Query: q, RecordType: "A"}})
		// A DNS filter opens the answer's addresses for the matched
		// rule's egress mode and ports.
		if r := out.Rule; r != nil && r.Egress != nil {
			fmt.Println(q, out.Decision, "by", r.ID, r.Egress.Mode, r.Egress.Ports)
			continue
		}
		fmt.Println(q, out.Decision, "by", out.RuleID())
	}
	// Output:
	// 2 rules, 1 lowered into the datapath
	// pypi.org allow by pypi direct_ip [443]
	// evil.example.com block by default-block
}
