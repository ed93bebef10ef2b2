package proxy_test

import (
	"outcall.dev/outcall/pkg/daemon"
	"outcall.dev/outcall/pkg/proxy"
	"outcall.dev/outcall/pkg/rules"
)

// The daemon runs the proxy as a gateway service, and the rule engine is
// its evaluator: these fail to compile if either seam drifts.
var (
	_ daemon.GatewayService = (*proxy.Proxy)(nil)
	_ proxy.Evaluator       = (*rules.Engine)(nil)
)
