package daemon

import (
	"context"
	"fmt"

	"outcall.dev/outcall/pkg/agentapi"
	"outcall.dev/outcall/pkg/container"
)

// buildAgent builds the agent API (S004) over the networks' identity
// registry, the rule engine and the rule request store. It needs no
// Docker client: with --no-docker the registry holds no container, so
// every peer is refused. An empty AgentSocket (a Config built in a test)
// runs no agent API.
func (d *Daemon) buildAgent() error {
	if d.cfg.AgentSocket == "" {
		return nil
	}
	s, err := agentapi.New(agentapi.Options{
		Identities:  d.networks,
		Policy:      d.rules,
		Requests:    d.requests,
		Logger:      d.log.With("target", "agent_api"),
		PermRate:    d.cfg.AgentPermRate,
		RuleRate:    d.cfg.AgentRuleRate,
		EvalTimeout: d.cfg.AgentTimeout,
	})
	if err != nil {
		return err
	}
	d.agent = s
	return nil
}

// listenAgent binds the agent socket (a stale one replaced, mode 0666)
// and returns the agent API's stage, which serves until its context ends,
// lets in-flight requests finish and removes the socket, and a close for
// a startup that fails before the stage runs.
func (d *Daemon) listenAgent() (serve func(context.Context) error, closeFn func(), err error) {
	l, err := agentapi.Listen(d.cfg.AgentSocket)
	if err != nil {
		return nil, nil, fmt.Errorf("--agent-socket: %w", err)
	}
	// Containers get the socket through a directory holding a link to
	// it, so they follow it across a restart of the daemon.
	unlink, err := container.LinkAgentSocket(d.cfg.AgentSocket)
	if err != nil {
		_ = l.Close()
		return nil, nil, fmt.Errorf("--agent-socket: %w", err)
	}
	d.log.Info("agent API listening", "target", "agent_api", "socket", d.cfg.AgentSocket,
		"container_mount", container.AgentSocketDir(d.cfg.AgentSocket))
	closeAll := func() {
		if err := unlink(); err != nil {
			d.log.Warn("agent socket link not removed", "target", "agent_api", "err", err)
		}
		_ = l.Close()
	}
	return func(ctx context.Context) error {
		err := d.agent.Serve(ctx, l)
		closeAll()
		return err
	}, closeAll, nil
}
