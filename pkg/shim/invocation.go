package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"outcall.dev/outcall/pkg/api"
)

// Usage is what `outcall --help` prints (S005 §4.3), exactly.
const Usage = `Usage:
  outcall bash <program> [args...]
  outcall exec <program> [args...]
  outcall <program> [args...]
  outcall fetch <url> [method]
  outcall file <path>
`

// ShortUsage is what the shim prints on stderr when it is given no
// arguments.
const ShortUsage = "Usage: outcall <tool> [args...]"

// Kind says what an invocation asks the shim to do.
type Kind int

// Kinds of invocation.
const (
	// KindMediated asks outcalld for a verdict and, for an executing form,
	// runs the command on an allow.
	KindMediated Kind = iota
	// KindHelp prints Usage; no daemon is needed.
	KindHelp
	// KindVersion prints the version; no daemon is needed.
	KindVersion
)

// Invocation is one parsed command line.
type Invocation struct {
	Kind Kind
	// Request is the permission request sent for a mediated invocation.
	Request api.PermissionRequest
	// Argv is the command run on an allow: the program first, then its
	// arguments, exactly as given. It is nil for the probes (fetch, file,
	// write and their aliases), which only ask and never perform anything.
	Argv []string
}

// Executes reports whether an allow runs a command.
func (inv Invocation) Executes() bool { return inv.Argv != nil }

// ErrUsage is returned by Parse for an empty command line; the shim then
// prints ShortUsage.
var ErrUsage = errors.New("no arguments")

// Parse reads the arguments after argv[0]. --help/-h and --version/-V are
// shim flags only as the first argument, so `outcall exec grep -h x` is a
// mediated grep. Every other first word is a verb of S005 §4.3 or, if it is
// none, the program of an implicit exec. An argument that is not valid
// UTF-8 is refused (ErrNotUTF8), because the JSON request would carry
// U+FFFD in its place and the daemon would judge another argument than the
// one that runs.
func Parse(args []string) (Invocation, error) {
	if len(args) == 0 {
		return Invocation{}, ErrUsage
	}
	for i, a := range args {
		if !utf8.ValidString(a) {
			return Invocation{}, fmt.Errorf("argument %d: %w", i+1, ErrNotUTF8)
		}
	}
	verb, rest := args[0], args[1:]
	switch verb {
	case "--help", "-h":
		return Invocation{Kind: KindHelp}, nil
	case "--version", "-V":
		return Invocation{Kind: KindVersion}, nil
	case "bash", "sh", "shell":
		return command(api.ActionShellExec, rest)
	case "exec":
		return command(api.ActionToolExec, rest)
	case "fetch", "http", "https", "curl", "wget":
		method := "GET"
		if len(rest) > 1 {
			method = rest[1]
		}
		return probe(api.ActionNetworkCall, rest, map[string]string{"method": method}), nil
	case "file", "read":
		return probe(api.ActionFileAccess, rest, map[string]string{"mode": "read"}), nil
	case "write":
		return probe(api.ActionFileAccess, rest, map[string]string{"mode": "write"}), nil
	default:
		return command(api.ActionToolExec, args)
	}
}

// ErrNotUTF8 refuses an argument the request could not carry faithfully.
var ErrNotUTF8 = errors.New("not valid UTF-8")

// command is an executing form: rest is the program and its arguments. A
// missing program sends target "" (the daemon answers 422, so the shim
// exits 5) and leaves an Argv of one empty name, which can never be run.
func command(action api.ActionType, rest []string) (Invocation, error) {
	inv := Invocation{Request: api.PermissionRequest{ActionType: action}}
	if len(rest) == 0 {
		inv.Argv = []string{""}
		return inv, nil
	}
	inv.Request.Target = rest[0]
	inv.Argv = append([]string(nil), rest...)
	if args := rest[1:]; len(args) > 0 {
		argsJSON, err := jsonArray(args)
		if err != nil {
			return Invocation{}, err
		}
		inv.Request.Metadata = map[string]string{
			"args":      strings.Join(args, " "),
			"args_json": argsJSON,
		}
	}
	return inv, nil
}

// probe is a non-executing form: its target is the first argument or "";
// extra arguments are ignored.
func probe(action api.ActionType, rest []string, metadata map[string]string) Invocation {
	inv := Invocation{Request: api.PermissionRequest{ActionType: action, Metadata: metadata}}
	if len(rest) > 0 {
		inv.Request.Target = rest[0]
	}
	return inv
}

// jsonArray encodes args as a JSON array of strings, without the HTML
// escaping of json.Marshal, so that the metadata reads as the arguments do.
func jsonArray(args []string) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(args); err != nil {
		return "", fmt.Errorf("encode args_json: %w", err)
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}
