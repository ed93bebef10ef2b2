package daemon

import (
	"context"
	"fmt"
	"time"

	"outcall.dev/outcall/pkg/network"
)

// GatewayService is a service that runs on every network's gateway: the DNS
// filter and the proxy. The daemon runs one Serve per service and network
// while the network's bridge is up, and ends it when the network goes or
// the daemon stops.
type GatewayService interface {
	// Name names the service in logs ("dns", "proxy").
	Name() string
	// Serve serves on gw until ctx is done. It opens its sockets through
	// gw, so that its port is open to the network's containers exactly
	// while it holds them, and closes them before it returns. An error
	// ends this network's instance; it is logged and started again.
	Serve(ctx context.Context, gw network.Gateway) error
}

// gatewayStartGrace is how long startup waits for the first instances of
// the gateway services to fail: a bind fails at once, and a daemon whose
// DNS filter cannot bind must not start.
const gatewayStartGrace = 300 * time.Millisecond

// gatewayRetry is how often the gateways are compared with what runs: a
// service that failed is started again, and a network whose event was
// missed is picked up.
const gatewayRetry = time.Second

// instance is one service running on one gateway.
type instance struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// services are the gateway services: the DNS filter, the proxy unless
// --no-proxy, and any the configuration adds.
func (d *Daemon) services() []GatewayService {
	var out []GatewayService
	if d.dns != nil {
		out = append(out, d.dns)
	}
	if d.proxy != nil {
		out = append(out, d.proxy)
	}
	return append(out, d.cfg.Services...)
}

// runGateways keeps one instance of each service on each gateway that is
// up, until ctx is done; then it ends them all and waits for them. An
// instance of the first round that fails is sent on failed.
func (d *Daemon) runGateways(ctx context.Context, failed chan<- error) error {
	services := d.services()
	if len(services) == 0 {
		return nil
	}
	running := map[string]instance{}
	defer func() {
		for _, in := range running {
			in.cancel()
		}
		for _, in := range running {
			<-in.done
		}
	}()
	t := time.NewTicker(gatewayRetry)
	defer t.Stop()
	first := failed
	for {
		d.reconcileGateways(ctx, services, running, first)
		first = nil
		select {
		case <-ctx.Done():
			return nil
		case <-d.gatewaysChanged:
		case <-t.C:
		}
	}
}

// reconcileGateways stops the instances whose gateway is gone or changed,
// forgets those that ended, and starts the missing ones.
func (d *Daemon) reconcileGateways(ctx context.Context, services []GatewayService, running map[string]instance, failed chan<- error) {
	type wanted struct {
		svc GatewayService
		gw  network.Gateway
	}
	want := map[string]wanted{}
	for _, gw := range d.networks.Gateways() {
		for _, svc := range services {
			n := gw.Network()
			want[svc.Name()+" "+n.Name+" "+n.Gateway.String()] = wanted{svc, gw}
		}
	}
	for key, in := range running {
		select {
		case <-in.done: // ended on its own: started again below
		default:
			if _, ok := want[key]; ok {
				continue
			}
			in.cancel()
			<-in.done
		}
		delete(running, key)
	}
	for key, w := range want {
		if _, ok := running[key]; !ok {
			running[key] = d.startInstance(ctx, w.svc, w.gw, failed)
		}
	}
}

func (d *Daemon) startInstance(ctx context.Context, svc GatewayService, gw network.Gateway, failed chan<- error) instance {
	ctx, cancel := context.WithCancel(ctx)
	in := instance{cancel: cancel, done: make(chan struct{})}
	n := gw.Network()
	log := d.log.With("target", svc.Name(), "network", n.Name, "gateway", n.Gateway.Addr())
	go func() {
		defer close(in.done)
		log.Info("gateway service starting")
		if err := svc.Serve(ctx, gw); err != nil && ctx.Err() == nil {
			log.Error("gateway service failed; it is started again", "err", err, "retry", gatewayRetry)
			if failed != nil {
				select {
				case failed <- fmt.Errorf("%s on network %s: %w", svc.Name(), n.Name, err):
				default:
				}
			}
			return
		}
		log.Debug("gateway service stopped")
	}()
	return in
}
