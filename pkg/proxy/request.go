package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxHeaders bounds the header lines of one request, as the original
// implementation's parser did (httparse with a 128-entry array).
const maxHeaders = 128

// errMalformed is every way a request head can fail the strict parse; the
// client learns only "Malformed HTTP request", so the parser's reasons stay
// in the error text for tests, never in a response.
var errMalformed = errors.New("malformed HTTP request")

// header is one header line as the client sent it: the name keeps its case
// (forwarded as written), the value is trimmed of spaces and tabs.
type header struct {
	Name, Value string
}

// request is a parsed request head. The proxy parses heads itself instead of
// using net/http, whose server accepts duplicate identical Content-Length,
// folds Host, canonicalises names and sizes its header limit loosely: none of
// which fits the exact framing rules of S006-FR-024.
type request struct {
	Method  string // as sent; compared and forwarded uppercased
	Target  string // the request target, unparsed
	Minor   int    // HTTP/1.<Minor>, 0 or 1
	Headers []header
}

// values returns the values of every header called name (case-insensitive),
// in order.
func (r *request) values(name string) []string {
	var out []string
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, name) {
			out = append(out, h.Value)
		}
	}
	return out
}

// has reports whether the request carries a header called name.
func (r *request) has(name string) bool {
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, name) {
			return true
		}
	}
	return false
}

// headerMap is http.headers for the rule engine: names lowercased, the
// values of repeated names joined with ", " in order. Proxy-Authorization
// is left out: authorization comes from the container's identity, never
// from credentials the client presents (S006-FR-014), so no rule can be
// written that trusts them, and they never travel further than the proxy.
func (r *request) headerMap() map[string]string {
	m := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		k := strings.ToLower(h.Name)
		if k == "proxy-authorization" {
			continue
		}
		if v, ok := m[k]; ok {
			m[k] = v + ", " + h.Value
		} else {
			m[k] = h.Value
		}
	}
	return m
}

// parseRequest parses one request head: everything up to and including the
// blank line that ends it, nothing after. It is strict where leniency would
// let the proxy and the upstream disagree about what was sent: CRLF line
// ends only, no leading blank line, no obsolete line folding, no space
// before a header's colon, token methods and names, HTTP/1.0 or 1.1 only,
// at most 128 headers, values valid UTF-8 with no control character but TAB.
func parseRequest(head []byte) (*request, error) {
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return nil, fmt.Errorf("%w: head does not end with an empty line", errMalformed)
	}
	lines := bytes.Split(head[:len(head)-4], []byte("\r\n"))
	r := &request{}
	line := lines[0]
	if len(line) == 0 {
		return nil, fmt.Errorf("%w: leading empty line", errMalformed)
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return nil, fmt.Errorf("%w: no method", errMalformed)
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return nil, fmt.Errorf("%w: no request target", errMalformed)
	}
	method, target, version := line[:sp1], rest[:sp2], rest[sp2+1:]
	if !isToken(method) {
		return nil, fmt.Errorf("%w: method is not a token", errMalformed)
	}
	for _, b := range target {
		if b <= ' ' || b >= 0x7f {
			return nil, fmt.Errorf("%w: request target has a byte 0x%02x", errMalformed, b)
		}
	}
	switch string(version) {
	case "HTTP/1.0":
		r.Minor = 0
	case "HTTP/1.1":
		r.Minor = 1
	default:
		return nil, fmt.Errorf("%w: version %q is not HTTP/1.0 or HTTP/1.1", errMalformed, version)
	}
	r.Method, r.Target = string(method), string(target)
	if len(lines)-1 > maxHeaders {
		return nil, fmt.Errorf("%w: more than %d headers", errMalformed, maxHeaders)
	}
	for _, l := range lines[1:] {
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			return nil, fmt.Errorf("%w: header line without a name and colon", errMalformed)
		}
		name := l[:colon]
		if !isToken(name) {
			// Also catches obsolete folding (a line starting with a space)
			// and a space before the colon.
			return nil, fmt.Errorf("%w: header name is not a token", errMalformed)
		}
		value := bytes.Trim(l[colon+1:], " \t")
		if !utf8.Valid(value) {
			return nil, fmt.Errorf("%w: header value is not UTF-8", errMalformed)
		}
		for _, b := range value {
			if (b < ' ' && b != '\t') || b == 0x7f {
				return nil, fmt.Errorf("%w: header value has a control byte 0x%02x", errMalformed, b)
			}
		}
		r.Headers = append(r.Headers, header{Name: string(name), Value: string(value)})
	}
	return r, nil
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isTchar(c) {
			return false
		}
	}
	return true
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
