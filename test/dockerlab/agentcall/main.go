// Command agentcall is a test client for containers: it speaks the agent
// API over the mounted agent socket the way any process in the container
// could, so end-to-end tests can send what the shim never would (another
// container's token, a rule request) and read every response body whole.
//
//	agentcall [-socket PATH] [-token TOKEN] METHOD PATH [BODY]
//
// prints the HTTP status on the first line and the body on the second.
//
//	agentcall -time PROGRAM [ARGS...]
//
// runs PROGRAM and prints "exit=N ms=M": how long it took from inside the
// container, without docker exec's own latency.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

func main() {
	socket := flag.String("socket", "/run/outcall/agent.sock", "agent socket")
	token := flag.String("token", "", "session token for the Authorization header")
	timed := flag.Bool("time", false, "run the arguments as a program and print its exit code and duration")
	flag.Parse()
	if *timed {
		os.Exit(runTimed(flag.Args()))
	}
	args := flag.Args()
	if len(args) < 2 || len(args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: agentcall [-socket PATH] [-token TOKEN] METHOD PATH [BODY]")
		os.Exit(2)
	}
	var body io.Reader
	if len(args) == 3 {
		body = strings.NewReader(args[2])
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *socket)
		},
	}}
	req, err := http.NewRequest(args[0], "http://localhost"+args[1], body)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if *token != "" {
		req.Header.Set("Authorization", "Bearer "+*token)
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Printf("%d\n%s\n", resp.StatusCode, strings.TrimSpace(string(b)))
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		fmt.Printf("Retry-After: %s\n", ra)
	}
}

func runTimed(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "agentcall -time: no program")
		return 2
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		code = 127
	}
	fmt.Printf("exit=%d ms=%d\n", code, took.Milliseconds())
	return 0
}
