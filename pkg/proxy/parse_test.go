package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseRequest(t *testing.T) {
	for _, tt := range []struct {
		name, head string
		ok         bool
	}{
		{"simple", "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
		{"no headers", "GET http://a.test/ HTTP/1.0\r\n\r\n", true},
		{"tab in value", "GET / HTTP/1.1\r\nX: a\tb\r\n\r\n", true},
		{"UTF-8 value", "GET / HTTP/1.1\r\nX: é\r\n\r\n", true},
		{"empty value", "GET / HTTP/1.1\r\nX:\r\n\r\n", true},
		{"128 headers", "GET / HTTP/1.1\r\n" + strings.Repeat("X: 1\r\n", 128) + "\r\n", true},
		{"129 headers", "GET / HTTP/1.1\r\n" + strings.Repeat("X: 1\r\n", 129) + "\r\n", false},
		{"unterminated", "GET / HTTP/1.1\r\nX: 1\r\n", false},
		{"leading CRLF", "\r\nGET / HTTP/1.1\r\n\r\n", false},
		{"empty method", " / HTTP/1.1\r\n\r\n", false},
		{"double space", "GET  / HTTP/1.1\r\n\r\n", false},
		{"no version", "GET /\r\n\r\n", false},
		{"lowercase version", "GET / http/1.1\r\n\r\n", false},
		{"trailing space", "GET / HTTP/1.1 \r\n\r\n", false},
		{"method with slash", "G/ET / HTTP/1.1\r\n\r\n", false},
		{"DEL in value", "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", false},
		{"CR in value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", false},
		{"NUL in target", "GET /\x00 HTTP/1.1\r\n\r\n", false},
		{"non-ASCII target", "GET /é HTTP/1.1\r\n\r\n", false},
		{"empty name", "GET / HTTP/1.1\r\n: v\r\n\r\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseRequest([]byte(tt.head))
			if (err == nil) != tt.ok {
				t.Errorf("parseRequest(%q) = %v, want ok=%v", tt.head, err, tt.ok)
			}
			if err != nil && !errors.Is(err, errMalformed) {
				t.Errorf("error %v does not wrap errMalformed", err)
			}
		})
	}
	r, err := parseRequest([]byte("get http://a.test/ HTTP/1.1\r\nHost:  a.test \t\r\nX-A: 1\r\nx-a: 2\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != "get" || r.Target != "http://a.test/" || r.Minor != 1 || r.Headers[0] != (header{"Host", "a.test"}) {
		t.Errorf("parsed %+v", r)
	}
	if m := r.headerMap(); m["x-a"] != "1, 2" || m["host"] != "a.test" {
		t.Errorf("header map %v", m)
	}
}

func TestNormalizeHost(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"API.Example.COM.", "api.example.com"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"10.0.0.1", "10.0.0.1"},
		{"under_score.test", "under_score.test"},
		{"2130706433", ""},
		{"0x7f.1", ""},
		{"127.1", ""},
		{"010.0.0.1", ""},
		{"a..b", ""},
		{"-a.test", ""},
		{"a.test..", ""},
		{"[::1]", ""},
		{"a b", ""},
		{"a%2e.test", ""},
		{"*.test", ""},
		{strings.Repeat("a", 64) + ".test", ""},
		{"", ""},
	} {
		got, _, err := normalizeHost(tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("normalizeHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestParseAbsoluteURI(t *testing.T) {
	for _, tt := range []struct{ in, host, origin string }{
		{"http://a.test/x?y=1", "a.test:80", "/x?y=1"},
		{"HTTP://A.test:8080", "a.test:8080", "/"},
		{"http://a.test?q", "a.test:80", "/?q"},
		{"http://a.test:/p", "a.test:80", "/p"},
		{"https://a.test/", "", ""},
		{"/x", "", ""},
		{"http:///x", "", ""},
		{"http://u@a.test/", "", ""},
		{"http://a.test/#f", "", ""},
		{"http://a.test:0/", "", ""},
		{"http://a.test:65536/", "", ""},
		{"http://a.test:8x/", "", ""},
	} {
		u, err := parseAbsoluteURI(tt.in)
		if tt.host == "" {
			if err == nil {
				t.Errorf("parseAbsoluteURI(%q) = %+v, want an error", tt.in, u)
			}
			continue
		}
		if err != nil || u.Target.String() != tt.host || u.Origin != tt.origin {
			t.Errorf("parseAbsoluteURI(%q) = %s %q, %v; want %s %q", tt.in, u.Target, u.Origin, err, tt.host, tt.origin)
		}
	}
}

func TestParseClientHello(t *testing.T) {
	real := clientHello(t, &tls.Config{ServerName: "Example.COM.", InsecureSkipVerify: true})
	truncated := real[:len(real)-1]
	trailing := append(append([]byte(nil), real...), 0)
	twoRecords := buildHello(nil)
	sniExt := func(entries ...[]byte) []byte {
		var list []byte
		for _, e := range entries {
			list = append(list, e...)
		}
		l := append([]byte{byte(len(list) >> 8), byte(len(list))}, list...)
		return append([]byte{0, 0, byte(len(l) >> 8), byte(len(l))}, l...)
	}
	name := func(typ byte, n string) []byte {
		return append([]byte{typ, byte(len(n) >> 8), byte(len(n))}, n...)
	}
	for _, tt := range []struct {
		name   string
		record []byte
		sni    string
		ok     bool
	}{
		{"crypto/tls ClientHello", real, "example.com", true},
		{"no extensions", buildHello(nil), "", true},
		{"other extensions only", buildHello([]byte{0, 0x17, 0, 0}), "", true},
		{"host_name", buildHello(sniExt(name(0, "a.test"))), "a.test", true},
		{"unknown name type only", buildHello(sniExt(name(7, "x"))), "", true},
		{"two host_names", buildHello(sniExt(name(0, "a.test"), name(0, "b.test"))), "", false},
		{"repeated extension", buildHello(append(sniExt(name(0, "a.test")), sniExt(name(0, "a.test"))...)), "", false},
		{"empty server_name list", buildHello([]byte{0, 0, 0, 2, 0, 0}), "", false},
		{"empty host_name", buildHello(sniExt(name(0, ""))), "", false},
		{"IP literal", clientHelloWithSNI(t, "10.0.0.1"), "", false},
		{"wildcard", clientHelloWithSNI(t, "*.a.test"), "", false},
		{"UTF-8", clientHelloWithSNI(t, "bücher.test"), "", false},
		{"control byte", clientHelloWithSNI(t, "a\x01.test"), "", false},
		{"numeric last label", clientHelloWithSNI(t, "a.123"), "", false},
		{"truncated", truncated, "", false},
		{"trailing byte", trailing, "", false},
		{"two records", append(twoRecords, twoRecords...), "", false},
		{"not handshake", append([]byte{0x17}, real[1:]...), "", false},
		{"version 2", append([]byte{0x16, 0x02}, real[2:]...), "", false},
		{"ServerHello", append(append([]byte(nil), real[:5]...), append([]byte{2}, real[6:]...)...), "", false},
		{"payload too small", []byte{0x16, 3, 1, 0, 3, 1, 0, 0}, "", false},
		{"header only", []byte{0x16, 3, 1, 0, 4}, "", false},
		{"empty", nil, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sni, err := ParseClientHello(tt.record)
			if (err == nil) != tt.ok || sni != tt.sni {
				t.Errorf("ParseClientHello = %q, %v; want %q ok=%v", sni, err, tt.sni, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrClientHello) {
				t.Errorf("error %v does not wrap ErrClientHello", err)
			}
		})
	}
}

// FuzzParseRequest checks that whatever the parser accepts is what the
// forwarder may write back out: no line break or control byte can hide in
// a method, target, name or value, and the limits hold.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
		"POST http://a.test/ HTTP/1.0\r\nContent-Length: 1\r\nX:  v \r\n\r\n",
		"\r\nGET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		r, err := parseRequest(head)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if !isToken([]byte(r.Method)) || r.Target == "" || strings.ContainsAny(r.Target, " \r\n\t") {
			t.Fatalf("accepted method %q target %q", r.Method, r.Target)
		}
		if len(r.Headers) > maxHeaders {
			t.Fatalf("accepted %d headers", len(r.Headers))
		}
		for _, h := range r.Headers {
			if !isToken([]byte(h.Name)) || !utf8.ValidString(h.Value) || strings.ContainsAny(h.Value, "\r\n\x00\x7f") ||
				strings.Trim(h.Value, " \t") != h.Value {
				t.Fatalf("accepted header %q: %q", h.Name, h.Value)
			}
		}
		// The head is exactly what was parsed: the terminator is at the
		// end and nowhere before it.
		if i := bytes.Index(head, []byte("\r\n\r\n")); i != len(head)-4 {
			t.Fatalf("accepted a head whose first blank line is at %d of %d", i, len(head))
		}
	})
}

// FuzzParseClientHello checks that the parser never panics and that a name
// it returns is a normalized ASCII domain the rules can compare. Records run
// to 16 KiB, so minimizing each new input takes the fuzzer most of its time:
// run it with -fuzzminimizetime 100x.
func FuzzParseClientHello(f *testing.F) {
	// Real crypto/tls ClientHellos are in testdata/fuzz: seeds added here
	// must be the same in every fuzzing process, and crypto/tls's are random.
	f.Add(buildHello(nil))
	f.Add(clientHelloWithSNI(f, "a.test"))
	f.Add(clientHelloWithSNI(f, "10.0.0.1"))
	f.Add([]byte{0x16, 3, 1, 0x40, 1})
	f.Fuzz(func(t *testing.T, record []byte) {
		sni, err := ParseClientHello(record)
		if err != nil {
			if !errors.Is(err, ErrClientHello) {
				t.Fatalf("error %v does not wrap ErrClientHello", err)
			}
			return
		}
		if sni != "" && (!validDomain(sni) || sni != strings.ToLower(sni) || strings.HasSuffix(sni, ".")) {
			t.Fatalf("returned server name %q", sni)
		}
		if n, err := readClientHelloRecord(bytes.NewReader(record)); err != nil || len(n) != len(record) {
			t.Fatalf("accepted %d bytes that are not exactly one record (%v)", len(record), err)
		}
	})
}
