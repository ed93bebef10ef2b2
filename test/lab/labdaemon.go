package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"outcall.dev/outcall/pkg/daemon"
	"outcall.dev/outcall/pkg/network"
)

// The lab daemon is outcalld's composition (daemon.New) with one gateway
// service of the lab's own: an echo that answers with the name of the
// network whose gateway it listens on. It stands in for the DNS filter and
// the proxy (issue 9), which plug into the daemon the same way, so a test
// can see which gateway answers whom. It runs as a child process of the
// test binary, started under nsenter, so that every thread of it is in the
// lab's host namespace.

// labDaemonEnv carries the lab daemon's configuration to the child.
const labDaemonEnv = "OUTCALL_LAB_DAEMON"

type labDaemonConfig struct {
	Bridge, Socket, StateDir, PinDir, RulesDir string
	EchoPort                                   uint16
}

// StartLabDaemon runs the lab daemon in the host namespace, with its echo
// service on port echoPort of every gateway, and waits for its socket.
func (l *Lab) StartLabDaemon(echoPort uint16) *Daemon {
	l.t.Helper()
	cfg, err := json.Marshal(labDaemonConfig{Bridge: l.Bridge, Socket: l.Socket(), StateDir: filepath.Join(l.Dir, "state"),
		PinDir: l.PinDir, RulesDir: l.RulesDir(), EchoPort: echoPort})
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+l.Host, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), labDaemonEnv+"="+string(cfg))
	return l.start(cmd)
}

// runLabDaemon is the child's main.
func runLabDaemon(cfgJSON string) int {
	var lc labDaemonConfig
	if err := json.Unmarshal([]byte(cfgJSON), &lc); err != nil {
		fmt.Fprintln(os.Stderr, "lab daemon:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := daemon.New(daemon.Config{
		Bridge: lc.Bridge, Gateway: netip.MustParsePrefix(Gateway + "/24"), SubnetBlock: netip.MustParsePrefix("10.200.0.0/16"),
		Socket: lc.Socket, StateDir: lc.StateDir, PinDir: lc.PinDir, RulesDir: lc.RulesDir,
		DNSPort: 53, ProxyPort: 8080, Logger: log,
		Services: []daemon.GatewayService{echoService{port: lc.EchoPort}},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab daemon:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "lab daemon:", err)
		return 1
	}
	return 0
}

// echoService answers the first bytes of every TCP connection, and every
// UDP datagram, on its port with the name of its gateway's network.
type echoService struct{ port uint16 }

func (echoService) Name() string { return "echo" }

func (s echoService) Serve(ctx context.Context, gw network.Gateway) error {
	l, err := gw.ListenTCP(ctx, s.port)
	if err != nil {
		return err
	}
	defer l.Close()
	pc, err := gw.ListenUDP(ctx, s.port)
	if err != nil {
		return err
	}
	defer pc.Close()
	reply := []byte(gw.Network().Name + "\n")
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(reply, from)
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Read(make([]byte, 16)); err == nil {
					_, _ = c.Write(reply)
				}
			}()
		}
	}()
	<-ctx.Done()
	return nil
}

// echoFrom asks the echo service at addr, from namespace ns, over network
// ("tcp4" or "udp4"); "" when nothing answers in time.
func echoFrom(ns, network, addr string) string {
	var got string
	_ = Do(ns, func() error {
		c, err := net.DialTimeout(network, addr, probeTimeout)
		if err != nil {
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeTimeout))
		if _, err := c.Write([]byte("?")); err != nil {
			return nil
		}
		buf := make([]byte, 128)
		n, _ := c.Read(buf)
		got = strings.TrimSpace(string(buf[:n]))
		return nil
	})
	return got
}
