package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// Exit codes (S005-FR-015). A child's own status is never passed through,
// so a child exiting 5 cannot pose as an unreachable daemon.
const (
	// ExitOK: the action was allowed and, for a command, it succeeded; or
	// help or version was printed; or SIGTERM ended the shim.
	ExitOK = 0
	// ExitFailed: the action was denied, or the command could not be
	// started, failed or was killed by a signal; or the usage was wrong.
	ExitFailed = 1
	// ExitUnreachable: the daemon could not be reached, answered with
	// anything but a well-formed success, stopped answering the heartbeat,
	// or OUTCALL_TIMEOUT_SECS is invalid. Nothing runs (a running child is
	// killed and reaped first).
	ExitUnreachable = api.UnreachableExitCode
)

// ForwardedSignals returns the signals passed on to the child while it
// runs. SIGTERM is not among them: it asks the shim to start nothing new
// and let the child finish (S005-FR-020).
func ForwardedSignals() []os.Signal {
	return []os.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}
}

// childReapTimeout bounds the wait for a killed child to be reaped (S005
// §4.4 step 11); past it the shim exits anyway and Pdeathsig is the
// backstop.
const childReapTimeout = 5 * time.Second

// Options is everything Run touches. A zero field takes the default its
// comment names; Main sets Args, Version, Term and Notify for the process.
type Options struct {
	// Args are the arguments after argv[0].
	Args []string
	// Stdin, Stdout and Stderr are the shim's, handed to the child as they
	// are (an *os.File is inherited directly). Defaults: os.Stdin, ...
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// LookupEnv reads OUTCALL_TIMEOUT_SECS. Default: os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Socket is the agent socket. Default: api.AgentSocketContainerPath;
	// the binary never changes it (S005 §4.3: the path is a constant), only
	// tests do.
	Socket string
	// Heartbeat is the interval of the reachability check while a verdict
	// or a child is awaited. Default: api.ShimHeartbeatSecs.
	Heartbeat time.Duration
	// Version is what --version prints after "outcall-agent ".
	Version string
	// Term delivers SIGTERM. Main subscribes it at process start, so a
	// SIGTERM at any point takes the graceful path. Nil: never.
	Term <-chan os.Signal
	// Notify subscribes c to sigs while the child runs and returns the
	// function that ends the subscription. Nil: nothing is forwarded.
	Notify func(c chan<- os.Signal, sigs ...os.Signal) (stop func())
	// LogLevel is the stderr log's level. Default: info.
	LogLevel slog.Level
}

// Main is the outcall-agent process: it subscribes to SIGTERM before
// anything else and runs the invocation in os.Args. Its result is the exit
// code.
func Main(version string) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	return Run(context.Background(), Options{
		Args:    os.Args[1:],
		Version: version,
		Term:    term,
		Notify:  notifyUnignored,
	})
}

// notifyUnignored subscribes c to those of sigs that the shim was not
// started ignoring: `nohup outcall exec ...` keeps its child immune to
// SIGHUP, as it would be without the shim.
func notifyUnignored(c chan<- os.Signal, sigs ...os.Signal) func() {
	var on []os.Signal
	for _, s := range sigs {
		if !signal.Ignored(s) {
			on = append(on, s)
		}
	}
	if len(on) == 0 {
		return func() {}
	}
	signal.Notify(c, on...)
	return func() { signal.Stop(c) }
}

func (o Options) withDefaults() Options {
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.Socket == "" {
		o.Socket = api.AgentSocketContainerPath
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = api.ShimHeartbeatSecs * time.Second
	}
	if o.Notify == nil {
		o.Notify = func(chan<- os.Signal, ...os.Signal) func() { return func() {} }
	}
	return o
}

// Run carries out one invocation (S005 §4.4) and returns the exit code.
func Run(ctx context.Context, o Options) int {
	o = o.withDefaults()
	inv, err := Parse(o.Args)
	switch {
	case errors.Is(err, ErrUsage):
		fmt.Fprintln(o.Stderr, ShortUsage)
		return ExitFailed
	case err != nil:
		fmt.Fprintf(o.Stderr, "outcall-agent: %v\n", err)
		return ExitFailed
	case inv.Kind == KindHelp:
		fmt.Fprint(o.Stdout, Usage)
		return ExitOK
	case inv.Kind == KindVersion:
		fmt.Fprintf(o.Stdout, "outcall-agent %s\n", o.Version)
		return ExitOK
	}
	value, set := o.LookupEnv(api.ShimTimeoutEnv)
	timeout, err := ParseTimeout(value, set)
	if err != nil {
		fmt.Fprintf(o.Stderr, "outcall-agent: %v\n", err)
		return ExitUnreachable
	}
	r := &runner{
		o:      o,
		log:    slog.New(slog.NewTextHandler(o.Stderr, &slog.HandlerOptions{Level: o.LogLevel})).With("component", "shim"),
		client: NewClient(o.Socket, timeout),
	}
	defer r.stopHeartbeat()
	return r.run(ctx, inv)
}

// runner is one invocation in progress.
type runner struct {
	o      Options
	log    *slog.Logger
	client *Client

	// terminating is set by SIGTERM: nothing new starts.
	terminating bool
	// heartbeatFailed reports the heartbeat's failure; nil while there is
	// no heartbeat (a nil channel is never ready).
	heartbeatFailed <-chan error
	heartbeatStop   func()
}

func (r *runner) run(ctx context.Context, inv Invocation) int {
	if r.termPending() {
		return r.terminated("before contacting outcalld")
	}
	if err := r.step(ctx, r.client.Reachable); err != nil {
		return r.fatal(err)
	}
	if r.terminating {
		return r.terminated("before check-in")
	}
	var session api.CheckinData
	err := r.step(ctx, func(ctx context.Context) (err error) {
		session, err = r.client.Checkin(ctx)
		return err
	})
	if err != nil {
		return r.fatal(err)
	}
	r.log.Info("registered with outcalld", "container_id", session.ContainerID)
	if r.terminating {
		return r.terminated("before the permission check")
	}
	r.startHeartbeat(ctx)

	var verdict api.Verdict
	err = r.step(ctx, func(ctx context.Context) (err error) {
		verdict, err = r.client.Check(ctx, session.SessionToken, inv.Request)
		return err
	})
	if err != nil {
		return r.fatal(err)
	}
	r.log.Debug("verdict", "allowed", verdict.Allowed, "matched_rule", deref(verdict.MatchedRule), "reason", deref(verdict.Reason))
	if !verdict.Allowed {
		r.stopHeartbeat()
		reason := api.ReasonBlocked
		if verdict.Reason != nil && *verdict.Reason != "" {
			reason = printable(*verdict.Reason)
		}
		fmt.Fprintf(r.o.Stderr, "outcall-agent: action blocked — %s\n", reason)
		if r.terminating {
			return r.terminated("after a denial")
		}
		return ExitFailed
	}
	if r.terminating || r.termPending() {
		return r.terminated("the allowed action is not started")
	}
	if !inv.Executes() {
		r.stopHeartbeat()
		r.log.Info("action allowed", "action_type", inv.Request.ActionType, "target", inv.Request.Target, "matched_rule", deref(verdict.MatchedRule))
		return ExitOK
	}
	r.log.Debug("action allowed", "action_type", inv.Request.ActionType, "target", inv.Request.Target, "matched_rule", deref(verdict.MatchedRule))
	return r.runChild(inv.Argv)
}

// step runs f, which bounds itself by T, and waits for it while watching
// SIGTERM (which lets f finish) and the heartbeat (whose failure abandons
// f: the daemon is gone).
func (r *runner) step(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-r.o.Term:
			r.terminate()
		case err := <-r.heartbeatFailed:
			cancel()
			<-done
			return err
		}
	}
}

// runChild runs argv with the shim's stdio and waits for it, forwarding
// signals, until it exits, the heartbeat fails (kill, reap, exit 5) or
// SIGTERM arrives (the heartbeat stops, the child finishes, exit 0).
func (r *runner) runChild(argv []string) int {
	if argv[0] == "" {
		fmt.Fprintln(r.o.Stderr, "outcall-agent: failed to execute '': no program given")
		return ExitFailed
	}
	select {
	case err := <-r.heartbeatFailed:
		return r.fatal(err)
	default:
	}
	signals := make(chan os.Signal, 16)
	stopSignals := r.o.Notify(signals, ForwardedSignals()...)
	defer stopSignals()

	started := make(chan *os.Process, 1)
	startErr := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked the child ends, not
		// the process: this goroutine keeps its thread until the child is
		// reaped, so only the shim's death sends the child SIGKILL.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = r.o.Stdin, r.o.Stdout, r.o.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		started <- cmd.Process
		exited <- cmd.Wait()
	}()
	var proc *os.Process
	select {
	case err := <-startErr:
		fmt.Fprintf(r.o.Stderr, "outcall-agent: failed to execute '%s': %v\n", printable(argv[0]), err)
		return ExitFailed
	case proc = <-started:
	}
	for {
		select {
		case err := <-exited:
			if r.terminating {
				return r.terminated("the command finished")
			}
			if err != nil {
				r.log.Debug("command failed", "program", argv[0], "err", err)
				return ExitFailed
			}
			return ExitOK
		case sig := <-signals:
			if err := proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				r.log.Warn("forward signal", "signal", sig, "err", err)
			}
		case <-r.o.Term:
			r.terminate()
		case err := <-r.heartbeatFailed:
			if kerr := proc.Kill(); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
				r.log.Error("kill command", "pid", proc.Pid, "err", kerr)
			}
			select {
			case <-exited:
			case <-time.After(childReapTimeout):
				r.log.Error("command not reaped after SIGKILL", "pid", proc.Pid, "waited", childReapTimeout)
			}
			return r.fatal(fmt.Errorf("command killed: %w", err))
		}
	}
}

// startHeartbeat checks reachability every interval until stopped or until
// a check fails, which it reports once.
func (r *runner) startHeartbeat(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	failed := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(r.o.Heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := r.client.Reachable(ctx); err != nil {
				if ctx.Err() == nil {
					failed <- fmt.Errorf("heartbeat failed — outcalld unreachable: %w", err)
				}
				return
			}
		}
	}()
	r.heartbeatFailed = failed
	r.heartbeatStop = func() { cancel(); wg.Wait() }
}

// stopHeartbeat ends the heartbeat, if any, and waits for it.
func (r *runner) stopHeartbeat() {
	if r.heartbeatStop != nil {
		r.heartbeatStop()
		r.heartbeatStop = nil
	}
	r.heartbeatFailed = nil
}

// terminate records SIGTERM: no new work, and no heartbeat from now on
// (S005-FR-020); what is in flight finishes.
func (r *runner) terminate() {
	if !r.terminating {
		r.log.Info("SIGTERM: finishing what is in flight, starting nothing new")
	}
	r.terminating = true
	r.stopHeartbeat()
}

// termPending takes a SIGTERM already delivered, if there is one.
func (r *runner) termPending() bool {
	select {
	case <-r.o.Term:
		r.terminate()
	default:
	}
	return r.terminating
}

func (r *runner) terminated(where string) int {
	r.log.Info("exiting on SIGTERM", "at", where)
	return ExitOK
}

// fatal reports err and returns exit 5; after SIGTERM the exit is 0, which
// is what a terminated shim always returns (S005-FR-020), and nothing has
// run either way.
func (r *runner) fatal(err error) int {
	fmt.Fprintf(r.o.Stderr, "outcall-agent: %v\n", err)
	if r.terminating {
		return r.terminated("after a failure")
	}
	return ExitUnreachable
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
