// Package hostclient is the outcall CLI's transport to outcalld's host API.
//
// It speaks raw HTTP/1.0 over the host Unix socket with blocking I/O
// (S001-FR-025/026): one connection per request, the request written in one
// piece, the response read until the daemon closes the connection, split at the
// first "\r\n\r\n", and the body decoded as the api.Response envelope. The status
// line is never interpreted; only the envelope's success flag counts.
//
// Every route of the host API has a typed method, and every method takes a
// context.Context first: cancelling it, or its deadline, ends the exchange
// (as does the Client's own Timeout, whichever comes first).
package hostclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

// DefaultTimeout bounds a whole exchange (dial, write, read) unless the Client
// sets its own.
const DefaultTimeout = 30 * time.Second

// MaxResponseBytes is the largest response the client reads; anything longer is
// reported as malformed rather than buffered without bound.
const MaxResponseBytes = 16 << 20

// Client sends requests to outcalld's host API over a Unix socket. The zero
// value is not usable; create one with New.
type Client struct {
	// SocketPath is the host API socket, e.g. api.DefaultHostSocket.
	SocketPath string
	// Timeout bounds each exchange from dial to the end of the response.
	// Zero or negative means DefaultTimeout.
	Timeout time.Duration
}

// New returns a Client for the socket at path with the default timeout.
func New(socketPath string) *Client {
	return &Client{SocketPath: socketPath, Timeout: DefaultTimeout}
}

// UnreachableError means the client could not connect to the socket at all
// (missing path, not a socket, nobody listening, permission denied, ...).
type UnreachableError struct {
	// SocketPath is the socket the client tried.
	SocketPath string
	// Err is the dial error.
	Err error
}

// Error returns the S001-FR-028 message; the cause is available via Unwrap.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot connect to outcalld at %s — is it running?", e.SocketPath)
}

// Unwrap returns the dial error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// APIError is a well-formed response with "success": false.
type APIError struct {
	// Message is the envelope's "error" string as the daemon sent it.
	Message string
}

// Error returns the daemon's message, or a placeholder when it sent none.
func (e *APIError) Error() string {
	if e.Message == "" {
		return "outcalld reported a failure without a message"
	}
	return e.Message
}

// ResponseError means the daemon answered with something that is not a
// well-formed HTTP response carrying the JSON envelope.
type ResponseError struct {
	// Reason says what was wrong, e.g. "no header/body separator".
	Reason string
	// Err is the underlying decode error, if any.
	Err error
}

// Error names what was wrong with the response.
func (e *ResponseError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("malformed response from outcalld: %s: %v", e.Reason, e.Err)
	}
	return "malformed response from outcalld: " + e.Reason
}

// Unwrap returns the underlying decode error.
func (e *ResponseError) Unwrap() error { return e.Err }

// do sends one request and returns the envelope's data decoded as T. body is
// marshalled as JSON; nil means no body. A success response without a "data"
// member is a ResponseError; "data": null yields the zero T.
func do[T any](ctx context.Context, c *Client, method, path string, body any) (T, error) {
	var zero T
	env, err := c.exchange(ctx, method, path, body)
	if err != nil {
		return zero, err
	}
	if env.Data == nil {
		return zero, &ResponseError{Reason: `success response without "data"`}
	}
	var out T
	if err := json.Unmarshal(env.Data, &out); err != nil {
		return zero, &ResponseError{Reason: `cannot decode "data"`, Err: err}
	}
	return out, nil
}

// exec sends one request for which only success matters; any data in the
// response is ignored.
func (c *Client) exec(ctx context.Context, method, path string, body any) error {
	_, err := c.exchange(ctx, method, path, body)
	return err
}

// envelope is api.Response as received: Data stays raw so that an absent
// member (nil) can be told apart from "data": null (the bytes "null").
type envelope struct {
	Success *bool           `json:"success"`
	Data    json.RawMessage `json:"data"`
	Error   string          `json:"error"`
}

// exchange performs the round trip and returns a successful envelope.
func (c *Client) exchange(ctx context.Context, method, path string, body any) (*envelope, error) {
	req, err := buildRequest(method, path, body)
	if err != nil {
		return nil, err
	}
	raw, err := c.roundTrip(ctx, req)
	if err != nil {
		return nil, err
	}
	return decodeResponse(raw)
}

// buildRequest renders the exact request bytes of S001-IF-007. GET carries no
// Content-Length; every other method does (0 without a body), and a body adds
// Content-Type: application/json.
func buildRequest(method, path string, body any) ([]byte, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("encoding request body: %w", err)
		}
	}
	var b bytes.Buffer
	b.WriteString(method + " " + path + " HTTP/1.0\r\nHost: localhost\r\n")
	if payload != nil {
		b.WriteString("Content-Type: application/json\r\n")
	}
	if payload != nil || method != "GET" {
		b.WriteString("Content-Length: " + strconv.Itoa(len(payload)) + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(payload)
	return b.Bytes(), nil
}

// roundTrip writes req and reads the response until EOF, all within the
// client's timeout and ctx: whichever ends first ends the exchange.
func (c *Client) roundTrip(ctx context.Context, req []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("request to outcalld at %s: %w", c.SocketPath, err)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline}
	conn, err := d.DialContext(ctx, "unix", c.SocketPath)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connecting to outcalld at %s: %w", c.SocketPath, context.Cause(ctx))
		}
		return nil, &UnreachableError{SocketPath: c.SocketPath, Err: err}
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("setting deadline on %s: %w", c.SocketPath, err)
	}
	// A done ctx moves the deadline into the past, which ends a blocked
	// write or read at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(req); err != nil {
		return nil, c.ioError(ctx, "sending request", timeout, err)
	}
	raw, err := io.ReadAll(io.LimitReader(conn, MaxResponseBytes+1))
	if err != nil {
		return nil, c.ioError(ctx, "reading response", timeout, err)
	}
	if len(raw) > MaxResponseBytes {
		return nil, &ResponseError{Reason: fmt.Sprintf("response exceeds %d bytes", MaxResponseBytes)}
	}
	return raw, nil
}

// ioError describes a failure after the connection was established.
func (c *Client) ioError(ctx context.Context, what string, timeout time.Duration, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: outcalld at %s: %w", what, c.SocketPath, context.Cause(ctx))
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s: outcalld at %s did not answer within %s: %w", what, c.SocketPath, timeout, err)
	}
	return fmt.Errorf("%s: outcalld at %s: %w", what, c.SocketPath, err)
}

// decodeResponse splits raw at the first blank line and decodes the body as the
// envelope. A success:false envelope becomes an *APIError.
func decodeResponse(raw []byte) (*envelope, error) {
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		if len(raw) == 0 {
			return nil, &ResponseError{Reason: "empty response"}
		}
		return nil, &ResponseError{Reason: `no header/body separator ("\r\n\r\n")`}
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		status, _, _ := bytes.Cut(head, []byte("\r\n"))
		return nil, &ResponseError{Reason: fmt.Sprintf("body is not a JSON envelope (status %q)", status), Err: err}
	}
	if env.Success == nil {
		return nil, &ResponseError{Reason: `JSON envelope without "success"`}
	}
	if !*env.Success {
		return nil, &APIError{Message: env.Error}
	}
	return &env, nil
}
