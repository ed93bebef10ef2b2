package agentapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"outcall.dev/outcall/pkg/api"
)

// Limits of a permission request's arguments (S004 §2.6).
const (
	maxArgs      = 1024
	maxArgBytes  = 32 << 10
	maxArgsTotal = 64 << 10
	maxHostLen   = 253
)

// permissionBody is the wire form of api.PermissionRequest with the
// required fields as pointers, so that a missing one is told from an
// empty one (missing is malformed, 400; empty is invalid, 422).
type permissionBody struct {
	ActionType *api.ActionType   `json:"action_type"`
	Target     *string           `json:"target"`
	Metadata   map[string]string `json:"metadata"`
}

// parsePermission decodes a permission request strictly. Every error is
// errMalformed: syntax, types (metadata values are strings), unknown
// fields, trailing data, a missing field or an action type that is none of
// the four.
func parsePermission(body []byte) (api.PermissionRequest, *apiError) {
	var b permissionBody
	if err := decodeObject(body, &b); err != nil || b.ActionType == nil || b.Target == nil {
		return api.PermissionRequest{}, errMalformed
	}
	switch *b.ActionType {
	case api.ActionToolExec, api.ActionShellExec, api.ActionFileAccess, api.ActionNetworkCall:
	default:
		return api.PermissionRequest{}, errMalformed
	}
	return api.PermissionRequest{ActionType: *b.ActionType, Target: *b.Target, Metadata: b.Metadata}, nil
}

// buildContext maps a permission request to the rule context (S004 §2.6)
// for the agent agentName. agent.name always comes from the daemon, never
// from the request. Semantic errors are 422 with what is wrong.
func buildContext(req api.PermissionRequest, agentName string) (*api.EvaluationContext, *apiError) {
	if strings.TrimSpace(req.Target) == "" {
		return nil, errInvalid("target is empty")
	}
	md := req.Metadata
	rc := &api.RunContext{Context: make(map[string]any, len(md)+3), Cwd: md["cwd"]}
	for k, v := range md {
		rc.Context[k] = v
	}
	mdAny := make(map[string]any, len(md))
	for k, v := range md {
		mdAny[k] = v
	}
	rc.Context["action_type"] = string(req.ActionType)
	rc.Context["target"] = req.Target
	rc.Context["metadata"] = mdAny
	c := &api.EvaluationContext{Run: rc, Agent: &api.AgentContext{Name: agentName}}
	switch req.ActionType {
	case api.ActionToolExec, api.ActionShellExec:
		rc.Tool = req.Target
		args, err := toolArgs(md)
		if err != nil {
			return nil, err
		}
		rc.Args = args
		rc.Flags = flagsOf(args)
	case api.ActionFileAccess:
		rc.Tool, rc.Args = "file", []string{req.Target}
	case api.ActionNetworkCall:
		rc.Tool, rc.Args, rc.Cwd = "network_call", []string{req.Target}, md["cwd"]
		nc, hc, err := networkContext(req.Target, md)
		if err != nil {
			return nil, err
		}
		c.Network, c.HTTP = nc, hc
	}
	if err := checkArgs(rc.Args); err != nil {
		return nil, err
	}
	if rc.Flags == nil {
		rc.Flags = []string{}
	}
	return c, nil
}

// toolArgs is run.args of a tool or shell run: metadata.args_json (a JSON
// array of strings) if present, else [metadata.args] if present, else [].
func toolArgs(md map[string]string) ([]string, *apiError) {
	if js, ok := md["args_json"]; ok {
		var args []string
		if err := decodeStrict([]byte(js), &args); err != nil || args == nil {
			return nil, errInvalid("metadata.args_json must be a JSON array of strings")
		}
		return args, nil
	}
	if a, ok := md["args"]; ok {
		return []string{a}, nil
	}
	return []string{}, nil
}

// flagsOf is the arguments that start with "-", a bare "-" excepted.
func flagsOf(args []string) []string {
	flags := []string{}
	for _, a := range args {
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
		}
	}
	return flags
}

func checkArgs(args []string) *apiError {
	if len(args) > maxArgs {
		return errInvalid("%d arguments; at most %d allowed", len(args), maxArgs)
	}
	total := 0
	for i, a := range args {
		if len(a) > maxArgBytes {
			return errInvalid("argument %d is %d bytes; at most %d allowed", i, len(a), maxArgBytes)
		}
		if strings.IndexByte(a, 0) >= 0 {
			return errInvalid("argument %d contains a NUL byte", i)
		}
		total += len(a)
	}
	if total > maxArgsTotal {
		return errInvalid("arguments are %d bytes together; at most %d allowed", total, maxArgsTotal)
	}
	return nil
}

// networkContext parses a network_call target: a URL (http or https) or
// a host with an optional port. network.ip is the target's address when
// the target is an IP literal, as the proxy sets it, and "" for a name:
// nothing is resolved.
func networkContext(target string, md map[string]string) (*api.NetworkContext, *api.HTTPContext, *apiError) {
	proto := "tcp"
	if p, ok := md["protocol"]; ok {
		proto = strings.ToLower(p)
	}
	if proto != "tcp" && proto != "udp" {
		return nil, nil, errInvalid("metadata.protocol must be tcp or udp")
	}
	if strings.Contains(target, "://") {
		return urlContext(target, proto, md)
	}
	if strings.IndexFunc(target, unicode.IsSpace) >= 0 {
		return nil, nil, errInvalid("network target contains whitespace")
	}
	host, port, err := splitTarget(target)
	if err != nil {
		return nil, nil, err
	}
	nc, err := hostContext(host, port, proto)
	return nc, nil, err
}

func urlContext(target, proto string, md map[string]string) (*api.NetworkContext, *api.HTTPContext, *apiError) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, nil, errInvalid("network target is not an http or https URL")
	}
	if proto != "tcp" {
		return nil, nil, errInvalid("an http or https URL needs protocol tcp")
	}
	if u.User != nil {
		return nil, nil, errInvalid("network target URL must not contain credentials")
	}
	host := u.Hostname()
	port := uint16(80)
	if u.Scheme == "https" {
		port = 443
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, nil, errInvalid("network target port %q is not 1-65535", p)
		}
		port = uint16(n)
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, nil, errInvalid("network target has an empty port")
	}
	nc, apiErr := hostContext(host, port, proto)
	if apiErr != nil {
		return nil, nil, apiErr
	}
	method := "GET"
	if m, ok := md["method"]; ok {
		method = strings.ToUpper(m)
	}
	if len(method) < 1 || len(method) > 32 || strings.IndexFunc(method, func(r rune) bool { return r < 'A' || r > 'Z' }) >= 0 {
		return nil, nil, errInvalid("metadata.method must be 1-32 ASCII letters")
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	return nc, &api.HTTPContext{Method: method, Path: path, Host: *nc.Hostname, Headers: map[string]string{}}, nil
}

// splitTarget splits ip:port, [v6]:port, a bare IP, host:port or a bare
// host; a target without a port means 443.
func splitTarget(t string) (string, uint16, *apiError) {
	if a, err := netip.ParseAddr(t); err == nil {
		if a.Zone() != "" {
			return "", 0, errInvalid("network target %q has a zone", t)
		}
		return t, 443, nil
	}
	if strings.HasPrefix(t, "[") || strings.Count(t, ":") == 1 {
		host, p, err := net.SplitHostPort(t)
		if err != nil {
			return "", 0, errInvalid("network target %q is not host:port", t)
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", 0, errInvalid("network target port %q is not 1-65535", p)
		}
		if strings.HasPrefix(t, "[") {
			if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
				return "", 0, errInvalid("network target %q: only an IPv6 address goes in brackets", t)
			}
		}
		return host, uint16(n), nil
	}
	if strings.Contains(t, ":") {
		return "", 0, errInvalid("network target %q: an IPv6 address with a port must use brackets", t)
	}
	return t, 443, nil
}

// hostContext validates host and builds the network context.
func hostContext(host string, port uint16, proto string) (*api.NetworkContext, *apiError) {
	if port == 0 {
		return nil, errInvalid("network target port must not be 0")
	}
	ip := ""
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if a.Zone() != "" {
			return nil, errInvalid("network target %q has a zone", host)
		}
		a = a.Unmap()
		host, ip = a.String(), a.String()
	} else {
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		if err := validHost(host); err != nil {
			return nil, errInvalid("network target host %q %s", host, err)
		}
	}
	return &api.NetworkContext{Hostname: &host, IP: ip, Port: port, Protocol: proto}, nil
}

// validHost accepts a DNS host name: 1-253 characters, labels of 1-63
// letters, digits, '-' and '_' that do not start or end with '-'.
func validHost(h string) error {
	if h == "" || len(h) > maxHostLen {
		return fmt.Errorf("must be 1-%d characters", maxHostLen)
	}
	if !utf8.ValidString(h) {
		return fmt.Errorf("is not valid UTF-8")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("has an empty or over-long label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("has a label starting or ending with '-'")
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("is not a valid host name")
			}
		}
	}
	return nil
}

// decodeObject decodes a JSON object strictly into v: the body must be an
// object (not null, not an array), with no unknown fields and nothing
// after it.
func decodeObject(body []byte, v any) error {
	if !bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{")) {
		return fmt.Errorf("body is not a JSON object")
	}
	return decodeStrict(body, v)
}

// decodeStrict is json decoding with unknown fields and trailing data
// refused.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if rest := strings.TrimSpace(string(data[dec.InputOffset():])); rest != "" {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}
