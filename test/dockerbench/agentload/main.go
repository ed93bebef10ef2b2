// Command agentload runs inside a benchmark container with helper mounts.
//
//	agentload checks -workers N -duration D
//
// checks in over the mounted agent socket and asks for permission checks
// from N workers for D, one connection per request as the shim does;
// it prints "checks=C errors=E secs=S p50_us=… p99_us=…".
//
//	agentload exec -n N PROGRAM [ARGS...]
//
// runs PROGRAM N times directly and N times through the shim (outcall
// exec PROGRAM ARGS...), alternating, and prints the start-to-exit
// p50/p99 of each in microseconds.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"
)

const socket = "/run/outcall/agent.sock"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agentload checks|exec ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "checks":
		err = checks(os.Args[2:])
	case "exec":
		err = execs(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentload:", err)
		os.Exit(1)
	}
}

func client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

func post(c *http.Client, path, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest("POST", "http://localhost"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, b, err
}

func checks(args []string) error {
	fs := flag.NewFlagSet("checks", flag.ContinueOnError)
	workers := fs.Int("workers", 4, "concurrent clients")
	duration := fs.Duration("duration", 5*time.Second, "how long")
	target := fs.String("target", "echo", "tool_exec target")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := client()
	code, b, err := post(c, "/v1/checkin", "", []byte("{}"))
	if err != nil || code != 200 {
		return fmt.Errorf("check-in: %d %s %v", code, b, err)
	}
	var in struct {
		Data struct {
			SessionToken string `json:"session_token"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"action_type": "tool_exec", "target": *target})
	var (
		mu      sync.Mutex
		lat     []time.Duration
		errs    int
		wg      sync.WaitGroup
		stop    = time.Now().Add(*duration)
		started = time.Now()
	)
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(stop) {
				t0 := time.Now()
				code, _, err := post(c, "/v1/permissions/check", in.Data.SessionToken, body)
				if err != nil || code != 200 {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	secs := time.Since(started).Seconds()
	fmt.Printf("checks=%d errors=%d secs=%.2f p50_us=%d p99_us=%d\n", len(lat), errs, secs, pct(lat, 50).Microseconds(), pct(lat, 99).Microseconds())
	return nil
}

func execs(args []string) error {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	n := fs.Int("n", 50, "runs of each")
	if err := fs.Parse(args); err != nil {
		return err
	}
	prog := fs.Args()
	if len(prog) == 0 {
		return fmt.Errorf("exec: no program")
	}
	run := func(argv []string) (time.Duration, error) {
		t0 := time.Now()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		err := cmd.Run()
		return time.Since(t0), err
	}
	var direct, shim []time.Duration
	for range *n {
		d, err := run(prog)
		if err != nil {
			return fmt.Errorf("%v: %w", prog, err)
		}
		direct = append(direct, d)
		s, err := run(append([]string{"outcall", "exec"}, prog...))
		if err != nil {
			return fmt.Errorf("outcall exec %v: %w", prog, err)
		}
		shim = append(shim, s)
	}
	fmt.Printf("direct_p50_us=%d direct_p99_us=%d shim_p50_us=%d shim_p99_us=%d\n",
		pct(direct, 50).Microseconds(), pct(direct, 99).Microseconds(), pct(shim, 50).Microseconds(), pct(shim, 99).Microseconds())
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
