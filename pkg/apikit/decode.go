package apikit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// DefaultMaxBody is the host API's body limit (1 MiB), the default of Serve
// and ReadJSON when they are given none.
const DefaultMaxBody = 1 << 20

// Unmarshal decodes data strictly into v: unknown fields and anything after
// the one JSON value are errors, so a typo in a request never silently means
// something else. Empty data leaves v as it is (a bodiless request means
// {}). Errors are ErrInvalid.
func Unmarshal(data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		err = errors.New("trailing data after JSON object")
	}
	if err != nil {
		return Errorf(ErrInvalid, "invalid request body: %w", err)
	}
	return nil
}

// ReadJSON reads r's body, at most maxBody bytes (DefaultMaxBody if not
// positive), and decodes it with Unmarshal. Decoding into struct{} admits
// only an empty body, {} or null, which is how a bodiless POST refuses a
// stray payload. The errors carry their kind: ErrTooLarge, ErrTimeout (the
// connection's read deadline passed, see BoundBodies) or ErrInvalid.
func ReadJSON(w http.ResponseWriter, r *http.Request, v any, maxBody int64) error {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return Unmarshal(body, v)
	case errors.As(err, &tooLarge):
		return Errorf(ErrTooLarge, "invalid request body: larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Errorf(ErrTimeout, "invalid request body: not received in time: %w", err)
	default:
		return Errorf(ErrInvalid, "invalid request body: %w", err)
	}
}

// BoundBodies limits every request body to maxBody bytes (DefaultMaxBody if
// not positive) and to timeout. The read deadline is set only when a body is
// expected and is lifted the moment the body has been read: the server's
// background read of an idle connection would otherwise hit it and cancel a
// slow handler's context (which is why Serve sets no ReadTimeout).
func BoundBodies(h http.Handler, maxBody int64, timeout time.Duration) http.Handler {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(timeout)); err == nil {
				r.Body = &deadlineBody{ReadCloser: http.MaxBytesReader(w, r.Body, maxBody), rc: rc}
			} else {
				r.Body = http.MaxBytesReader(w, r.Body, maxBody)
			}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody clears the connection's read deadline once the body ends.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
