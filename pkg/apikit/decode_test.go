package apikit

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

type request struct {
	Name string `json:"name"`
	Port *int   `json:"port"`
}

func TestUnmarshal(t *testing.T) {
	tests := []struct {
		name, body string
		want       request
		wantErr    string // "" means success
	}{
		{name: "object", body: `{"name":"a","port":443}`, want: request{Name: "a", Port: ptr(443)}},
		{name: "empty body is {}", body: ``},
		{name: "null", body: `null`},
		{name: "whitespace after the value", body: "{\"name\":\"a\"} \n\t", want: request{Name: "a"}},
		{name: "unknown field", body: `{"name":"a","nmae":"b"}`, wantErr: `invalid request body: json: unknown field "nmae"`},
		{name: "second value", body: `{"name":"a"} {}`, wantErr: "invalid request body: trailing data after JSON object"},
		{name: "stray bracket", body: `{"name":"a"}]`, wantErr: "invalid request body: trailing data after JSON object"},
		{name: "not json", body: `name=a`, wantErr: "invalid request body: invalid character 'a' in literal null (expecting 'u')"},
		{name: "wrong type", body: `{"port":"443"}`, wantErr: "invalid request body: json: cannot unmarshal string into Go struct field request.port of type int"},
		{name: "truncated", body: `{"name":`, wantErr: "invalid request body: unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got request
			err := Unmarshal([]byte(tt.body), &got)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if got.Name != tt.want.Name || (got.Port == nil) != (tt.want.Port == nil) || (got.Port != nil && *got.Port != *tt.want.Port) {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err %v is not ErrInvalid", err)
			}
		})
	}
}

// TestUnmarshalEmptyStruct: struct{} admits only nothing, {} and null.
func TestUnmarshalEmptyStruct(t *testing.T) {
	for body, ok := range map[string]bool{``: true, `{}`: true, `null`: true, `{"force":true}`: false, `[]`: false} {
		if err := Unmarshal([]byte(body), &struct{}{}); (err == nil) != ok {
			t.Errorf("%q: err = %v, want ok %v", body, err, ok)
		}
	}
}

// failingBody fails every read with err.
type failingBody struct{ err error }

func (b failingBody) Read([]byte) (int, error) { return 0, b.err }
func (b failingBody) Close() error             { return nil }

func TestReadJSON(t *testing.T) {
	tests := []struct {
		name       string
		body       func() *http.Request
		max        int64
		wantKind   *Kind
		wantStatus int
		wantMsg    string
	}{
		{"too large", func() *http.Request {
			return httptest.NewRequest("POST", "/", strings.NewReader(`{"name":"`+strings.Repeat("a", 100)+`"}`))
		}, 64, ErrTooLarge, 413, "invalid request body: larger than 64 bytes"},
		{"deadline", func() *http.Request {
			r := httptest.NewRequest("POST", "/", nil)
			r.Body = failingBody{os.ErrDeadlineExceeded}
			return r
		}, 0, ErrTimeout, 408, "invalid request body: not received in time: i/o timeout"},
		{"broken connection", func() *http.Request {
			r := httptest.NewRequest("POST", "/", nil)
			r.Body = failingBody{errors.New("connection reset")}
			return r
		}, 0, ErrInvalid, 400, "invalid request body: connection reset"},
		{"bad json", func() *http.Request {
			return httptest.NewRequest("POST", "/", strings.NewReader(`{"x":1}`))
		}, 0, ErrInvalid, 400, `invalid request body: json: unknown field "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v request
			err := ReadJSON(httptest.NewRecorder(), tt.body(), &v, tt.max)
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("err = %v, want kind %v", err, tt.wantKind)
			}
			if status, msg := StatusOf(err); status != tt.wantStatus || msg != tt.wantMsg {
				t.Errorf("StatusOf = %d %q, want %d %q", status, msg, tt.wantStatus, tt.wantMsg)
			}
		})
	}
	var v request
	if err := ReadJSON(httptest.NewRecorder(), httptest.NewRequest("POST", "/", strings.NewReader(`{"name":"a"}`)), &v, 0); err != nil || v.Name != "a" {
		t.Errorf("positive control: %+v, %v", v, err)
	}
}

func ptr[T any](v T) *T { return &v }
