package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode"

	"outcall.dev/outcall/pkg/api"
)

// Client speaks the agent API on one Unix socket. Every call is bounded by
// the timeout T and opens its own connection (keep-alives are off), so a
// daemon that died between two calls shows up as a failed connect, never
// as a stale pooled connection.
type Client struct {
	socket  string
	timeout time.Duration
	http    *http.Client
}

// NewClient returns a client of the agent socket at path whose calls each
// give up after timeout.
func NewClient(path string, timeout time.Duration) *Client {
	c := &Client{socket: path, timeout: timeout}
	c.http = &http.Client{
		Transport: &http.Transport{
			// Proxy stays nil: HTTP_PROXY in the container must never
			// divert the agent API.
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			DisableKeepAlives:      true,
			DisableCompression:     true,
			MaxResponseHeaderBytes: api.AgentBodyLimit,
		},
		// A redirect from the agent API is not an answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

// Reachable checks that the socket exists and accepts a connection, within
// T; the connection is closed at once (S005 §4.4 step 3). A file alone is
// not enough: a stale socket with no listener fails the connect
// (S005-EC-008). It is also the heartbeat.
func (c *Client) Reachable(ctx context.Context) error {
	if err := c.reachable(ctx); err != nil {
		return fmt.Errorf("agent socket not reachable at %s: %w", c.socket, err)
	}
	return nil
}

func (c *Client) reachable(ctx context.Context) error {
	if _, err := os.Stat(c.socket); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("agent socket not found at %s", c.socket)
		}
		return fmt.Errorf("stat: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return conn.Close()
}

// Checkin is POST /v1/checkin with body {} and no token (S004-IF-001).
func (c *Client) Checkin(ctx context.Context) (api.CheckinData, error) {
	var data api.CheckinData
	err := c.post(ctx, "check-in", api.AgentRouteCheckin, "", struct{}{}, func(body []byte) (err error) {
		data, err = ParseCheckin(body)
		return err
	})
	return data, err
}

// Check is POST /v1/permissions/check with the session token
// (S004-IF-002). A deny is a Verdict, not an error; an error is any answer
// that is not a well-formed verdict.
func (c *Client) Check(ctx context.Context, token string, req api.PermissionRequest) (api.Verdict, error) {
	var v api.Verdict
	err := c.post(ctx, "permission check", api.AgentRoutePermission, token, req, func(body []byte) (err error) {
		v, err = ParseVerdict(body)
		return err
	})
	return v, err
}

// post sends one request and hands a 2xx body to parse. Every failure is
// an error whose text starts with what (S005 §4.4: "check-in rejected",
// "check-in timed out — outcalld unreachable").
func (c *Client) post(ctx context.Context, what, route, token string, body any, parse func([]byte) error) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", what, err)
	}
	if len(payload) > api.AgentBodyLimit {
		return fmt.Errorf("%s: request of %d bytes exceeds the agent API limit of %d", what, len(payload), api.AgentBodyLimit)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost"+route, bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(ctx, what, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, api.AgentBodyLimit+1))
	if err != nil {
		return c.transportError(ctx, what, err)
	}
	if len(answer) > api.AgentBodyLimit {
		return fmt.Errorf("%s: answer exceeds %d bytes", what, api.AgentBodyLimit)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s rejected: HTTP %d%s", what, resp.StatusCode, errorText(answer))
	}
	if err := parse(answer); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// transportError names a timeout as the daemon being unreachable, and any
// other failure as it is.
func (c *Client) transportError(ctx context.Context, what string, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s timed out — outcalld unreachable (no answer within %s)", what, c.timeout)
	}
	return fmt.Errorf("%s failed — outcalld unreachable: %w", what, err)
}

// errorText is ": <message>" of an error envelope, for the diagnostic, or
// "" when the body is not one. It is read loosely: the exit is 5 whatever
// the body says.
func errorText(body []byte) string {
	var env struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error == "" {
		return ""
	}
	return ": " + printable(env.Error)
}

// printable caps daemon-supplied text for a diagnostic and replaces control
// and format characters, so that an answer cannot write escape sequences or
// reorder text on the caller's terminal.
func printable(s string) string {
	const max = 512
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return '?'
		}
		return r
	}, s)
}
