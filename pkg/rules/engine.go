package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rulefile"
)

// Layer names the enforcement point that asked for an evaluation; its
// string labels the per-rule metrics (outcall_rule_hits_total{layer}).
type Layer string

// The layers.
const (
	LayerDatapath Layer = "datapath"
	LayerDNS      Layer = "dns"
	LayerProxy    Layer = "proxy"
	LayerAgent    Layer = "agent"
	LayerHostAPI  Layer = "host_api"
)

// String is the layer's metrics label.
func (l Layer) String() string { return string(l) }

// DefaultRuleLabel is the rule label of decisions no rule made.
const DefaultRuleLabel = "default-block"

// Budget is the evaluation time above which a warning is logged
// (S003-FR-031).
const Budget = api.EvaluationBudgetMS * time.Millisecond

// Observer is told about every decision and reload, for metrics. layer is
// a Layer's label.
type Observer interface {
	ObserveDecision(layer, ruleID string, decision api.Decision)
	ObserveReload(err error)
}

// PacketLayer takes a new rule set's packet tables before the set goes
// live. It must apply them atomically or not at all.
type PacketLayer interface {
	InstallRules(*PacketTables) error
}

// Options configure an Engine.
type Options struct {
	// Dir is the rules directory.
	Dir    string
	Logger *slog.Logger
	// Observer and Packet may be nil.
	Observer Observer
	Packet   PacketLayer
	// Budget is the evaluation time above which a warning is logged;
	// 0 means Budget (50 ms, S003-FR-031).
	Budget time.Duration
}

// Engine owns the active rule set: it loads, swaps and evaluates.
type Engine struct {
	opts     Options
	log      *slog.Logger
	compiler *Compiler
	active   atomic.Pointer[Set]
	// reloadMu serialises reloads; evaluations never take it.
	reloadMu sync.Mutex
}

// NewEngine returns an engine whose active set is empty (everything
// blocks) until the first Reload.
func NewEngine(opts Options) (*Engine, error) {
	c, err := NewCompiler()
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Budget <= 0 {
		opts.Budget = Budget
	}
	e := &Engine{opts: opts, log: opts.Logger, compiler: c}
	empty, err := c.Compile(&rulefile.Set{})
	if err != nil {
		return nil, err
	}
	e.active.Store(empty)
	return e, nil
}

// Dir returns the rules directory.
func (e *Engine) Dir() string { return e.opts.Dir }

// Active returns the rule set in force. Callers keep using the set they got
// for the whole of one request.
func (e *Engine) Active() *Set { return e.active.Load() }

// Compiler returns the engine's compiler.
func (e *Engine) Compiler() *Compiler { return e.compiler }

// Reload reads, validates, compiles and lowers the whole directory off to
// the side, hands the packet tables to the datapath, and only then swaps
// the set in. On any error the previous set (and its packet tables) stays
// active and the error says why (S003-FR-023).
func (e *Engine) Reload(ctx context.Context) (api.ReloadResult, error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	start := time.Now()
	set, err := e.build()
	if err == nil && e.opts.Packet != nil {
		if err = e.opts.Packet.InstallRules(set.packet); err != nil {
			err = fmt.Errorf("install packet-layer rules: %w", err)
		}
	}
	if e.opts.Observer != nil {
		e.opts.Observer.ObserveReload(err)
	}
	if err != nil {
		e.log.ErrorContext(ctx, "rule reload failed; previous rules remain active", "dir", e.opts.Dir, "err", err)
		return api.ReloadResult{}, fmt.Errorf("reload failed: %w; previous rules remain active", err)
	}
	e.active.Store(set)
	res := set.Result()
	for _, w := range res.Warnings {
		e.log.WarnContext(ctx, "rule warning", "warning", w)
	}
	e.log.InfoContext(ctx, "rules loaded", "dir", e.opts.Dir, "files", res.FilesLoaded,
		"rules", res.RulesLoaded, "packet_rules", res.PacketRules,
		"table_entries", len(set.packet.Tables.Entries), "took", time.Since(start))
	return res, nil
}

func (e *Engine) build() (*Set, error) {
	loaded, err := rulefile.LoadDir(e.opts.Dir)
	if err != nil {
		return nil, err
	}
	return e.compiler.Compile(loaded)
}

// Evaluate decides c against the active set for the enforcement point
// layer, and logs and counts the decision. The outcome carries the rule that
// decided, so the caller can act on the rule's egress mode and ports.
func (e *Engine) Evaluate(ctx context.Context, layer Layer, c *api.EvaluationContext) Outcome {
	start := time.Now()
	out := e.active.Load().Evaluate(c)
	out.Layer = layer
	e.report(ctx, layer, out, time.Since(start))
	return out
}

// Watch reloads when a rule file in the directory is created, changed,
// renamed or removed, once the directory has been quiet for debounce. It
// shares Reload with the host API, so a bad edit keeps the previous set.
// It also notices the directory itself appearing or disappearing. It
// returns when ctx is done.
func (e *Engine) Watch(ctx context.Context, debounce time.Duration) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch rules directory: %w", err)
	}
	defer w.Close()
	dir := filepath.Clean(e.opts.Dir)
	parent := filepath.Dir(dir)
	if err := w.Add(parent); err != nil && !errors.Is(err, os.ErrNotExist) {
		e.log.WarnContext(ctx, "cannot watch the rules directory's parent", "dir", parent, "err", err)
	}
	watching := w.Add(dir) == nil
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if !relevant(dir, ev.Name) {
				continue
			}
			fire = time.After(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			e.log.WarnContext(ctx, "rules directory watch error", "err", err)
		case <-fire:
			fire = nil
			if !watching {
				watching = w.Add(dir) == nil
			}
			if _, err := os.Stat(dir); err != nil {
				watching = false
			}
			// Reload logs its own outcome.
			_, _ = e.Reload(ctx)
		}
	}
}

// relevant reports whether a change to name can change the rule set.
func relevant(dir, name string) bool {
	if filepath.Clean(name) == dir {
		return true
	}
	if filepath.Dir(name) != dir {
		return false
	}
	return rulefile.IsRuleFile(filepath.Base(name))
}

// Validate loads and compiles a rules directory without any daemon, as
// `outcall rules validate` does for operators' CI. Unlike the daemon, it
// refuses a directory that does not exist.
func Validate(dir string) (*Set, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("rules directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("rules directory %s is not a directory", dir)
	}
	c, err := NewCompiler()
	if err != nil {
		return nil, err
	}
	loaded, err := rulefile.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	return c.Compile(loaded)
}

// RequestFileName is the name a submitted rule file has in errors about it,
// until approval gives it its own (agent-<id>.yaml).
const RequestFileName = "agent-request.yaml"

// CheckRequest validates a rule file an agent submits (S003-FR-024): its
// schema, definitions and CEL, and that its rule ids do not clash with the
// rules directory as it is now. Approval validates again, with the whole
// directory, when it reloads.
func (e *Engine) CheckRequest(ruleFile []byte) error {
	srcs, _, err := rulefile.ReadDir(e.opts.Dir)
	if err != nil {
		return err
	}
	srcs = append(srcs, rulefile.Source{Name: RequestFileName, Data: ruleFile})
	slices.SortFunc(srcs, func(a, b rulefile.Source) int { return strings.Compare(a.Name, b.Name) })
	loaded, err := rulefile.Build(srcs)
	if err != nil {
		return err
	}
	_, err = e.compiler.Compile(loaded)
	return err
}
