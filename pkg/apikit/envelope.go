// Package apikit is what every Outcall API server shares: the response
// envelope and its writers, strict JSON decoding with bounded bodies and read
// deadlines, Unix sockets that have their final owner and mode from the
// moment anyone can reach them, and the domain errors (kinds) that
// components return, mapped to HTTP statuses in one place (StatusOf).
//
// The host API uses it today; the agent API and the dashboard are meant to.
// It imports nothing kernel-facing, so it builds wherever Go does.
package apikit

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"outcall.dev/outcall/pkg/api"
)

// Response is the envelope of every response (S000-FR-005): success always,
// data on success and error on failure, each omitted when absent. It is
// api.Response, so that clients, which import only pkg/api, decode the very
// type servers encode.
type Response[T any] = api.Response[T]

// Write sends resp as JSON with the given status.
func Write[T any](w http.ResponseWriter, log *slog.Logger, status int, resp Response[T]) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(resp); err != nil && log != nil {
		log.Debug("write API response", "err", err)
	}
}

// Reply answers 200 with data, or, when err is not nil, the error envelope
// with the status StatusOf gives err. A nil data on success omits "data".
func Reply[T any](w http.ResponseWriter, log *slog.Logger, data *T, err error) {
	if err != nil {
		WriteError(w, log, err)
		return
	}
	Write(w, log, http.StatusOK, Response[T]{Success: true, Data: data})
}

// WriteError answers with err's envelope and status (StatusOf).
func WriteError(w http.ResponseWriter, log *slog.Logger, err error) {
	status, msg := StatusOf(err)
	Write(w, log, status, Response[struct{}]{Error: msg})
}

// NoRoute answers every request it gets with an enveloped 404 naming the
// method and path, so that unknown routes and wrong methods read like every
// other error (a ServeMux's own answers are plain text).
func NoRoute(log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, log, Errorf(ErrNotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
}

// NonNil turns a nil slice into an empty one, so lists serialise as [] and
// a client never has to tell "none" from "absent".
func NonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
