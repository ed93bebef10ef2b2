package rules

import (
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rulefile"
)

// Context variables. Each field is declared as its own qualified variable
// (network.ip, http.headers, ...) rather than as a field of a namespace
// object: the checker then rejects typos such as dns.type at load time, the
// types are exact (network.port is an int), and an evaluation resolves a
// field with one switch instead of building maps.
var variables = []struct {
	name string
	typ  *cel.Type
}{
	{"network.hostname", cel.StringType},
	{"network.ip", cel.StringType},
	{"network.port", cel.IntType},
	{"network.protocol", cel.StringType},
	{"http.method", cel.StringType},
	{"http.path", cel.StringType},
	{"http.host", cel.StringType},
	{"http.headers", cel.MapType(cel.StringType, cel.StringType)},
	{"http.body_size", cel.IntType},
	{"dns.query", cel.StringType},
	{"dns.record_type", cel.StringType},
	{"docker.image", cel.StringType},
	{"docker.command", cel.ListType(cel.StringType)},
	{"docker.volumes", cel.ListType(cel.StringType)},
	{"docker.env_keys", cel.ListType(cel.StringType)},
	{"docker.capabilities", cel.ListType(cel.StringType)},
	{"run.tool", cel.StringType},
	{"run.args", cel.ListType(cel.StringType)},
	{"run.flags", cel.ListType(cel.StringType)},
	{"run.cwd", cel.StringType},
	{"run.context", cel.MapType(cel.StringType, cel.DynType)},
	{"agent.name", cel.StringType},
}

// fieldTypes maps each context variable to its type.
var fieldTypes = func() map[string]*cel.Type {
	m := make(map[string]*cel.Type, len(variables))
	for _, v := range variables {
		m[v.name] = v.typ
	}
	return m
}()

// fieldList names every context field, for errors about unknown ones.
var fieldList = func() string {
	names := make([]string, len(variables))
	for i, v := range variables {
		names[i] = v.name
	}
	return strings.Join(names, ", ")
}()

func isStringField(name string) bool {
	t, ok := fieldTypes[name]
	return ok && t.IsExactType(cel.StringType)
}

// newEnv is the one CEL environment every rule compiles in: the context
// variables, the standard library, cel-go's string extensions and its
// network library (ip, cidr, containsIP).
func newEnv() (*cel.Env, error) {
	opts := []cel.EnvOption{ext.Strings(), ext.Network(),
		// The loader bounds expanded conditions; CEL must accept what it passes.
		cel.ParserExpressionSizeLimit(rulefile.MaxExpandedSize)}
	for _, v := range variables {
		opts = append(opts, cel.Variable(v.name, v.typ))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("create CEL environment: %w", err)
	}
	return env, nil
}

// Zero values of absent namespaces (S003-FR-005.g): field access never
// errors, and conditions that need a value simply do not hold.
var (
	emptyList    = []string{}
	emptyHeaders = map[string]string{}
	emptyContext = map[string]any{}
)

// activation resolves the context variables of one evaluation.
type activation struct{ c *api.EvaluationContext }

var _ interpreter.Activation = activation{}

// Parent implements interpreter.Activation.
func (activation) Parent() interpreter.Activation { return nil }

// ResolveName implements interpreter.Activation.
func (a activation) ResolveName(name string) (any, bool) {
	c := a.c
	switch name {
	case "network.hostname":
		if c.Network != nil && c.Network.Hostname != nil {
			return *c.Network.Hostname, true
		}
		return "", true
	case "network.ip":
		if c.Network != nil {
			return c.Network.IP, true
		}
		return "", true
	case "network.port":
		if c.Network != nil {
			return int64(c.Network.Port), true
		}
		return int64(0), true
	case "network.protocol":
		if c.Network != nil {
			return c.Network.Protocol, true
		}
		return "", true
	case "http.method", "http.path", "http.host", "http.headers", "http.body_size":
		return a.http(name)
	case "dns.query":
		if c.DNS != nil {
			return c.DNS.Query, true
		}
		return "", true
	case "dns.record_type":
		if c.DNS != nil {
			return c.DNS.RecordType, true
		}
		return "", true
	case "docker.image", "docker.command", "docker.volumes", "docker.env_keys", "docker.capabilities":
		return a.docker(name)
	case "run.tool", "run.args", "run.flags", "run.cwd", "run.context":
		return a.run(name)
	case "agent.name":
		if c.Agent != nil {
			return c.Agent.Name, true
		}
		return "", true
	}
	return nil, false
}

func (a activation) http(name string) (any, bool) {
	h := a.c.HTTP
	if h == nil {
		h = &api.HTTPContext{}
	}
	switch name {
	case "http.method":
		return h.Method, true
	case "http.path":
		return h.Path, true
	case "http.host":
		return h.Host, true
	case "http.headers":
		return orEmptyMap(h.Headers, emptyHeaders), true
	default: // http.body_size
		return int64(min(h.BodySize, 1<<63-1)), true
	}
}

func (a activation) docker(name string) (any, bool) {
	d := a.c.Docker
	if d == nil {
		d = &api.DockerContext{}
	}
	switch name {
	case "docker.image":
		return d.Image, true
	case "docker.command":
		return orEmpty(d.Command), true
	case "docker.volumes":
		return orEmpty(d.Volumes), true
	case "docker.env_keys":
		return orEmpty(d.EnvKeys), true
	default: // docker.capabilities
		return orEmpty(d.Capabilities), true
	}
}

func (a activation) run(name string) (any, bool) {
	r := a.c.Run
	if r == nil {
		r = &api.RunContext{}
	}
	switch name {
	case "run.tool":
		return r.Tool, true
	case "run.args":
		return orEmpty(r.Args), true
	case "run.flags":
		return orEmpty(r.Flags), true
	case "run.cwd":
		return r.Cwd, true
	default: // run.context
		return orEmptyMap(r.Context, emptyContext), true
	}
}

func orEmpty(l []string) []string {
	if l == nil {
		return emptyList
	}
	return l
}

func orEmptyMap[V any](m, empty map[string]V) map[string]V {
	if m == nil {
		return empty
	}
	return m
}
