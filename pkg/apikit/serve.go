package apikit

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Timeouts bound how long a client may take to send a request, so a stalled
// client cannot hold a connection and its goroutine forever.
type Timeouts struct {
	// Header bounds reading the request line and headers.
	Header time.Duration
	// Body bounds reading the body, from the end of the headers.
	Body time.Duration
}

// DefaultTimeouts are generous for a client on the same host and short
// enough that stalled connections do not pile up.
var DefaultTimeouts = Timeouts{Header: 10 * time.Second, Body: 10 * time.Second}

// DefaultShutdownGrace is how long Serve lets in-flight requests finish.
const DefaultShutdownGrace = 5 * time.Second

// ServeOptions configure Serve; zero fields take the defaults.
type ServeOptions struct {
	// Timeouts per request; a zero field is DefaultTimeouts' value.
	Timeouts Timeouts
	// MaxBody bounds every request body (DefaultMaxBody if not positive).
	MaxBody int64
	// ShutdownGrace bounds the drain once ctx is done
	// (DefaultShutdownGrace if not positive).
	ShutdownGrace time.Duration
}

// Serve serves h on l until ctx is done, then stops accepting, lets
// in-flight requests finish for up to the shutdown grace and closes l (a
// Listener from Listen then removes its socket). Bodies are bounded with
// BoundBodies; a client that never reads its answer is cut off too.
func Serve(ctx context.Context, l net.Listener, h http.Handler, opts ServeOptions) error {
	t := opts.Timeouts
	if t.Header <= 0 {
		t.Header = DefaultTimeouts.Header
	}
	if t.Body <= 0 {
		t.Body = DefaultTimeouts.Body
	}
	grace := opts.ShutdownGrace
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	srv := &http.Server{Handler: BoundBodies(h, opts.MaxBody, t.Body), ReadHeaderTimeout: t.Header,
		WriteTimeout: t.Header + t.Body + time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	<-errc // Serve has returned, and l is closed
	_ = l.Close()
	return err
}
