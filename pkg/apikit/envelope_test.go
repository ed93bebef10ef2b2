package apikit

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReply(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	type item struct {
		Name string  `json:"name"`
		Note *string `json:"note"`
	}
	tests := []struct {
		name   string
		write  func(w http.ResponseWriter)
		status int
		want   string
	}{
		{"data with an inner null", func(w http.ResponseWriter) { Reply(w, log, &item{Name: "a"}, nil) }, 200,
			`{"success":true,"data":{"name":"a","note":null}}`},
		{"no data", func(w http.ResponseWriter) { Reply[struct{}](w, log, nil, nil) }, 200, `{"success":true}`},
		{"empty list", func(w http.ResponseWriter) { l := NonNil[item](nil); Reply(w, log, &l, nil) }, 200, `{"success":true,"data":[]}`},
		{"error drops data", func(w http.ResponseWriter) {
			Reply(w, log, &item{Name: "a"}, Errorf(ErrConflict, "request %q is not pending", "rr-1"))
		}, 409, `{"success":false,"error":"request \"rr-1\" is not pending"}`},
		{"unclassified error", func(w http.ResponseWriter) { WriteError(w, nil, errors.New("boom")) }, 500, `{"success":false,"error":"boom"}`},
		{"no route", func(w http.ResponseWriter) {
			NoRoute(log).ServeHTTP(w, httptest.NewRequest("DELETE", "/api/v1/bridge", nil))
		}, 404, `{"success":false,"error":"no route for DELETE /api/v1/bridge"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.write(rec)
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			if got := strings.TrimSuffix(rec.Body.String(), "\n"); got != tt.want {
				t.Errorf("body %s, want %s", got, tt.want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}
