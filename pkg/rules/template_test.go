package rules

import (
	"math/rand/v2"
	"testing"

	celast "cel.dev/cel-go/common/ast"
	"google.golang.org/protobuf/proto"
)

// sameAsDirect compiles src through its template and from its text and
// fails unless both give the same expression and type. It reports whether
// the template path was taken.
func sameAsDirect(t *testing.T, c *Compiler, src string) bool {
	t.Helper()
	viaTemplate, ok := newTemplates(c.env).parse(src)
	direct, iss := c.env.Compile(src)
	if !ok {
		return false
	}
	if iss.Err() != nil {
		t.Fatalf("%q: the template path accepted what CEL rejects: %v", src, iss.Err())
	}
	// The checked expressions, with their types and references, must be
	// identical; only source positions may differ.
	want, err1 := celast.ToProto(direct.NativeRep())
	got, err2 := celast.ToProto(viaTemplate)
	if err1 != nil || err2 != nil {
		t.Fatalf("%q: %v, %v", src, err1, err2)
	}
	want.SourceInfo, got.SourceInfo = nil, nil
	if !proto.Equal(got, want) {
		t.Fatalf("%q: template gives\n%v\ndirect\n%v", src, got, want)
	}

	return true
}

func TestTemplateMatchesDirectCompile(t *testing.T) {
	c, err := NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		src      string
		template bool
	}{
		{`network.ip == "10.0.0.1" && network.port in [443, 8443] && network.protocol == "tcp"`, true},
		{`dns.query == 'pypi.org' || dns.query.endsWith(".pythonhosted.org")`, true},
		{`run.tool == "git" && run.flags.exists(f, f == "-f" || f == "--force")`, true},
		{`cidr("10.20.0.0/16").containsIP(network.ip) && http.body_size < 1048576`, true},
		{`http.headers["x-team"] == "infra" && size(run.args) > 2`, true},
		{`network.port == 443`, true},
		{`http.path.matches("^/api/v[0-9]+/")`, true},
		// Not simple enough: compiled from the text.
		{`http.path.matches("^/api/v\\d+/")`, false},
		{`dns.query == "a\"b"`, false},
		{`network.port == -1`, false},
		{`network.port == 0x1bb`, false},
		{`http.body_size > 1.5`, false},
		{`r"raw" == http.path`, false},
		{`"""triple""" == http.path`, false},
		{`network.port == 443 // https`, false},
		{`network.port == 007`, false},
		{`true`, false}, // no literal to take out
		// Literals in a bad place: the template is refused or checking
		// fails, and the text compile reports the error.
		{`cidr("10.0.0.0/33").containsIP(network.ip)`, false},
		{`network.port == "443"`, false},
	}
	for _, tt := range tests {
		if got := sameAsDirect(t, c, tt.src); got != tt.template {
			t.Errorf("%q: template path taken = %v, want %v", tt.src, got, tt.template)
		}
	}
	// Every generated differential-test condition too.
	g := ruleGen{r: rand.New(rand.NewPCG(1, 2))}
	for range 2000 {
		sameAsDirect(t, c, g.expr(3))
	}
}

// FuzzTemplate: whatever the condition, the template path either gives up
// or gives exactly what compiling the text gives.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{
		`network.ip == "10.0.0.1" && network.port in [443, 8443]`,
		`run.flags.exists(f, f == "-f")`, `a - 1`, `[1,2][0] == 1`, `"x" + 'y' == "xy"`,
		`network.port == 1 ? "a" : "b"`, `{"k": 1}["k"] == 1`, `dns.query.startsWith("a") && dns.query.size() > 3`,
	} {
		f.Add(s)
	}
	c, err := NewCompiler()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > 4096 {
			return
		}
		sameAsDirect(t, c, src)
	})
}
