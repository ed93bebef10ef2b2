// Command connloop is the container side of the container benchmarks
// (package test/dockerbench): it dials ADDR over TCP every 2 ms, each
// attempt bounded by 200 ms, until one attempt connects; every connection
// it makes writes ID and a newline and is closed. After the first success
// it dials no more and waits for SIGTERM, so that its container keeps
// running. It exits 1 when nothing connects within 60 s, 2 on bad usage.
//
//	connloop ADDR ID
//
// A new attempt every 2 ms, rather than one attempt retried, keeps the
// resolution at 2 ms when early packets are dropped: a dropped SYN would
// otherwise be retried by the kernel only after a second.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const (
	interval = 2 * time.Millisecond
	attempt  = 200 * time.Millisecond
	giveUp   = 60 * time.Second
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: connloop ADDR ID")
		os.Exit(2)
	}
	addr, id := os.Args[1], os.Args[2]
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	won := make(chan struct{}, 1)
	tick := time.NewTicker(interval)
	deadline := time.After(giveUp)
loop:
	for {
		select {
		case <-won:
			break loop
		case <-stop:
			return
		case <-deadline:
			fmt.Fprintf(os.Stderr, "connloop: no connection to %s within %v\n", addr, giveUp)
			os.Exit(1)
		case <-tick.C:
			go func() {
				c, err := net.DialTimeout("tcp4", addr, attempt)
				if err != nil {
					return
				}
				_ = c.SetDeadline(time.Now().Add(attempt))
				_, _ = c.Write([]byte(id + "\n"))
				_ = c.Close()
				select {
				case won <- struct{}{}:
				default:
				}
			}()
		}
	}
	tick.Stop()
	<-stop
}
