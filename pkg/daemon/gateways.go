package daemon

import (
	"context"
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

// gatewayRetry is how often the gateways are compared with what runs: a
// service that failed is started again, and a network whose event was
// missed is picked up.
const gatewayRetry = time.Second

// instance is one service running on one gateway.
type instance struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// runGateways keeps one instance of each service on each gateway that is
// up, until ctx is done; then it ends them all and waits for them.
func (d *Daemon) runGateways(ctx context.Context) error {
	if len(d.cfg.Services) == 0 {
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
	for {
		d.reconcileGateways(ctx, running)
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
func (d *Daemon) reconcileGateways(ctx context.Context, running map[string]instance) {
	type wanted struct {
		svc GatewayService
		gw  network.Gateway
	}
	want := map[string]wanted{}
	for _, gw := range d.networks.Gateways() {
		for _, svc := range d.cfg.Services {
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
			running[key] = d.startInstance(ctx, w.svc, w.gw)
		}
	}
}

func (d *Daemon) startInstance(ctx context.Context, svc GatewayService, gw network.Gateway) instance {
	ctx, cancel := context.WithCancel(ctx)
	in := instance{cancel: cancel, done: make(chan struct{})}
	n := gw.Network()
	log := d.log.With("target", svc.Name(), "network", n.Name, "gateway", n.Gateway.Addr())
	go func() {
		defer close(in.done)
		log.Info("gateway service starting")
		if err := svc.Serve(ctx, gw); err != nil && ctx.Err() == nil {
			log.Error("gateway service failed; it is started again", "err", err, "retry", gatewayRetry)
			return
		}
		log.Debug("gateway service stopped")
	}()
	return in
}
