package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/nft"
)

// Gateway services (DNS, proxy) are open to containers only while Outcall's
// own listener holds the port: the datapath's services map, which lets a
// container's packet to gateway:port through, gets an entry only after the
// listener is bound to the gateway address, and loses it before the
// listener closes. So a host process listening on the wildcard address (a
// local dnsmasq, a dev server) is never reachable from a container through
// the gateway's service ports, whether Outcall's listener is up or not.
//
// The DNS filter and the proxy open their sockets through ListenTCPService
// and ListenUDPService; until they exist nothing does, and every gateway
// port is closed.

// servicesLocked returns the open services, sorted, for
// datapath.SetServices; Up installs them into a fresh datapath.
func (c *Controller) servicesLocked() []datapath.Service {
	out := make([]datapath.Service, 0, len(c.services))
	for s := range c.services {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Gateway != out[j].Gateway {
			return out[i].Gateway.Less(out[j].Gateway)
		}
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].Proto < out[j].Proto
	})
	return out
}

// holdServiceLocked counts one more (delta 1) or one fewer (delta -1)
// listener on s and writes the resulting set into the datapath, if one is
// loaded; on a failed write the count is restored.
func (c *Controller) holdServiceLocked(s datapath.Service, delta int) error {
	add := func(delta int) {
		c.services[s] += delta
		if c.services[s] <= 0 {
			delete(c.services, s)
		}
	}
	add(delta)
	if c.dp == nil {
		return nil // Up installs the set into the next datapath
	}
	if err := c.dp.SetServices(c.servicesLocked()); err != nil {
		add(-delta)
		return err
	}
	// The floor leaves the open services' traffic untracked, so queries
	// never count towards the per-agent cap. The datapath alone decides
	// what reaches them: a floor that missed this update tracks (and
	// counts) that traffic, as it did before, and opens nothing.
	if err := c.floor.SetServices(c.floorServicesLocked()); err != nil {
		c.log.Warn("floor: gateway services stay tracked", "err", err)
	}
	return nil
}

// floorServicesLocked is servicesLocked for the floor.
func (c *Controller) floorServicesLocked() []nft.Service {
	var out []nft.Service
	for _, s := range c.servicesLocked() {
		out = append(out, nft.Service{Addr: s.Gateway, Proto: s.Proto, Port: s.Port})
	}
	return out
}

// ListenTCPService binds a TCP listener on the gateway address of network
// and port, and only then opens the port to that network's containers.
// Closing the listener closes the port to containers first. A port held by
// another process on the gateway or the wildcard address is an error naming
// the port and, when /proc tells, the holder.
func (c *Controller) ListenTCPService(ctx context.Context, network string, port uint16) (net.Listener, error) {
	addr, err := c.serviceAddr(network, port)
	if err != nil {
		return nil, err
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp4", addr.String())
	if err != nil {
		return nil, serviceBindError("tcp", addr, err)
	}
	s := datapath.Service{Gateway: addr.Addr(), Proto: unix.IPPROTO_TCP, Port: port}
	if err := c.openService(s); err != nil {
		l.Close()
		return nil, err
	}
	return &serviceListener{Listener: l, release: c.releaser(s)}, nil
}

// ListenUDPService is ListenTCPService for a UDP socket.
func (c *Controller) ListenUDPService(ctx context.Context, network string, port uint16) (net.PacketConn, error) {
	addr, err := c.serviceAddr(network, port)
	if err != nil {
		return nil, err
	}
	pc, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp4", addr.String())
	if err != nil {
		return nil, serviceBindError("udp", addr, err)
	}
	s := datapath.Service{Gateway: addr.Addr(), Proto: unix.IPPROTO_UDP, Port: port}
	if err := c.openService(s); err != nil {
		pc.Close()
		return nil, err
	}
	return &servicePacketConn{PacketConn: pc, release: c.releaser(s)}, nil
}

func (c *Controller) serviceAddr(network string, port uint16) (netip.AddrPort, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.netByNameLocked(network)
	if n == nil {
		return netip.AddrPort{}, fmt.Errorf("gateway service on port %d: no network %q", port, network)
	}
	return netip.AddrPortFrom(n.Gateway.Addr(), port), nil
}

func (c *Controller) openService(s datapath.Service) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.holdServiceLocked(s, 1); err != nil {
		return fmt.Errorf("open gateway service %s/%d to containers: %w", datapath.ProtoName(s.Proto), s.Port, err)
	}
	c.log.Info("gateway service open", "gateway", s.Gateway, "proto", datapath.ProtoName(s.Proto), "port", s.Port)
	return nil
}

// releaser returns the function that closes s to containers, once.
func (c *Controller) releaser(s datapath.Service) func() error {
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if err = c.holdServiceLocked(s, -1); err != nil {
				err = fmt.Errorf("close gateway service %s/%d to containers: %w", datapath.ProtoName(s.Proto), s.Port, err)
				c.log.Error("gateway service stays open in the datapath after its listener closed", "gateway", s.Gateway, "proto", datapath.ProtoName(s.Proto), "port", s.Port, "err", err)
				return
			}
			c.log.Info("gateway service closed", "gateway", s.Gateway, "proto", datapath.ProtoName(s.Proto), "port", s.Port)
		})
		return err
	}
}

// serviceListener closes the port to containers before the socket.
type serviceListener struct {
	net.Listener
	release func() error
}

// Close closes the port to containers, then the listener.
func (l *serviceListener) Close() error {
	return errors.Join(l.release(), l.Listener.Close())
}

// servicePacketConn closes the port to containers before the socket.
type servicePacketConn struct {
	net.PacketConn
	release func() error
}

// Close closes the port to containers, then the socket.
func (c *servicePacketConn) Close() error {
	return errors.Join(c.release(), c.PacketConn.Close())
}

// SyscallConn gives access to the socket itself (syscall.Conn), for a
// service that reads and writes several datagrams per system call
// (recvmmsg, sendmmsg). A syscall.RawConn cannot close the socket, so the
// port still closes to containers only through Close, before the socket;
// the *net.UDPConn underneath is never handed out.
func (c *servicePacketConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.PacketConn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("gateway service socket %s: no raw access", c.LocalAddr())
	}
	return sc.SyscallConn()
}

// serviceBindError names the port and, when it is taken, who holds it.
func serviceBindError(network string, addr netip.AddrPort, err error) error {
	if errors.Is(err, unix.EADDRINUSE) {
		holder := portHolder(network, addr.Port())
		if holder == "" {
			holder = "another process"
		}
		return fmt.Errorf("gateway service %s/%d: %s already holds port %d (on %s or the wildcard address); stop it or move it to another address, or choose another port: %w",
			network, addr.Port(), holder, addr.Port(), addr.Addr(), err)
	}
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("gateway service %s/%d: gateway address %s is not configured (is the bridge up?): %w", network, addr.Port(), addr.Addr(), err)
	}
	return fmt.Errorf("gateway service %s/%d: listen on %s: %w", network, addr.Port(), addr, err)
}

// portHolder names the processes with a socket bound to port, as
// `pid 123 (dnsmasq)`, from /proc of this network namespace; "" when /proc
// does not say.
func portHolder(network string, port uint16) string {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/" + network, "/proc/net/" + network + "6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 {
				continue
			}
			// local_address is ADDR:PORT in hex; state 0A is LISTEN (TCP)
			// and 07 is an unconnected UDP socket.
			_, p, ok := strings.Cut(fields[1], ":")
			n, err := strconv.ParseUint(p, 16, 16)
			if !ok || err != nil || uint16(n) != port {
				continue
			}
			if network == "tcp" && fields[3] != "0A" {
				continue
			}
			if fields[9] != "0" {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return ""
	}
	var holders []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, proc := range procs {
		fds, _ := os.ReadDir(proc + "/fd")
		for _, fd := range fds {
			target, err := os.Readlink(proc + "/fd/" + fd.Name())
			if err != nil || !inodes[target] {
				continue
			}
			comm, _ := os.ReadFile(proc + "/comm")
			holders = append(holders, fmt.Sprintf("pid %s (%s)", filepath.Base(proc), strings.TrimSpace(string(comm))))
			break
		}
	}
	return strings.Join(holders, ", ")
}
