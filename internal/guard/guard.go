// Package guard keeps a pod's limits next to the machine: `scopectl guard` runs on the
// pod (or on an SSH host, next to its Scope container) and stops it when it has sat
// idle past its idle limit, ran past its max hours, or (a training pod) its job ended,
// the way SkyPilot's autostop and dstack's idle duration do. The laptop that created
// the pod may be closed: nobody pays for an idle GPU either way.
//
// It decides idleness from the signals `scopectl pod watch` uses (package watch):
// Scope loading a pipeline or serving a session (Scope's HTTP API on the machine
// itself), the GPU in use (nvidia-smi), and training jobs: a running
// `scopectl train supervise` process, or a job state file
// (/workspace/.scopectl/jobs/*/state.json) whose "phase" is not an ended one.
//
// It stops only the one target it was started for (a Stopper bound to one pod id or
// one container), never anything else. A failed stop (the API answers 5xx, the network
// is gone) is logged in one line and tried again on the next check, after the signals
// are read again: a pod that became busy meanwhile is not stopped. Probe failures keep
// a pod running ErrorLimit-1 checks in a row, then count as idle (a machine whose
// signals cannot be read must not run forever).
//
// Time: idleness is measured with this process's monotonic clock, immune to the
// machine's wall clock jumping. Max hours counts from the pod's start as the provider
// reports it, converted to the local clock with the offset between the provider's
// Date header and this clock (Started), so a pod whose clock is skewed is not stopped
// early or late.
//
// What it writes, under Dir (/workspace/.scopectl/guard on a pod, on the volume so it
// survives the stop): guard.lock (one guard per target: a second one exits at once,
// naming the first), state.json (its limits, last activity and verdict, rewritten at
// every check), stop.json (the last stop: when, why, by whom; written before the stop
// is asked for, so that it survives the process being killed by the stop), and
// stops.jsonl (every stop it made, one JSON line each: the ledger's rows from the pod).
package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/watch"
)

// DefaultDir is where the guard keeps its files on a RunPod pod: on the volume.
const DefaultDir = "/workspace/.scopectl/guard"

// Defaults for a Guard's zero fields.
const (
	DefaultEvery       = 30 * time.Second
	DefaultErrorLimit  = 3
	DefaultStopTimeout = 60 * time.Second
	// DefaultMaxStopBackoff is the longest wait between two failed stops: once the API
	// answers again, the pod is stopped at most this long later.
	DefaultMaxStopBackoff = 2 * time.Minute
)

// Stopper stops the one target a guard watches.
type Stopper interface {
	// Stop asks for the target to stop; nil once the provider accepted it.
	Stop(ctx context.Context) error
	// String names the target ("runpod pod abc123", "container daydream-scope on this host").
	String() string
}

// Runner is a Stopper whose target can be seen stopped and started again without
// the guard itself ending (an SSH host's container: the guard runs on the host). A
// RunPod pod's guard runs inside the pod and ends with it.
type Runner interface {
	Running(ctx context.Context) (bool, error)
}

// Guard watches one target. Stopper and Limits are required.
type Guard struct {
	Target  string // the pod id (or ssh host id): what stop.json and the ledger name
	Limits  provider.Limits
	Stopper Stopper
	// Started is when the target last started, on this machine's clock; zero: when Run began.
	Started time.Time
	Dir     string        // default DefaultDir
	Probes  []watch.Probe // activity: any one busy is enough
	Jobs    *Jobs         // training jobs; nil: none are looked at
	Every   time.Duration // default DefaultEvery
	// ErrorLimit: consecutive checks where every probe failed before they count as idle.
	ErrorLimit int
	CostPerHr  float64 // recorded with each stop (the ledger prices the run with it)
	// Refresh, when set, reads the target's limits again at every check (an SSH host's
	// container labels, which a later deploy may change); ok false keeps Limits.
	Refresh func(ctx context.Context) (l provider.Limits, ok bool, err error)
	// MaxStopBackoff bounds the wait between failed stops (they back off from Every,
	// doubling); default DefaultMaxStopBackoff.
	MaxStopBackoff time.Duration
	Now            func() time.Time
	Log            func(format string, args ...any)

	mu          sync.Mutex
	lastActive  time.Time
	errs        int
	stopped     bool // the target is not running (stopped by this guard or anyone): waiting for it to run again
	sawJob      bool
	failedStops int       // stops in a row the provider did not accept
	nextStop    time.Time // no stop is asked for before this, after a failed one
	refreshErr  string
}

// Stop is one stop the guard made, as stop.json and each line of stops.jsonl hold it.
type Stop struct {
	Target    string          `json:"target"`
	Reason    string          `json:"reason"`
	Kind      string          `json:"kind"` // idle | max_hours | job_end
	At        time.Time       `json:"at"`
	By        string          `json:"by"` // "guard"
	Limits    provider.Limits `json:"limits"`
	Started   time.Time       `json:"started"`
	IdleFor   float64         `json:"idle_seconds"`
	CostPerHr float64         `json:"cost_per_hr,omitempty"`
	Accepted  bool            `json:"accepted"` // the provider accepted the stop
	Error     string          `json:"error,omitempty"`
}

// State is state.json: what the guard saw at its last check.
type State struct {
	Target     string          `json:"target"`
	PID        int             `json:"pid"`
	Limits     provider.Limits `json:"limits"`
	Started    time.Time       `json:"started"`
	CheckedAt  time.Time       `json:"checked_at"`
	LastActive time.Time       `json:"last_active"`
	IdleFor    float64         `json:"idle_seconds"`
	Verdict    string          `json:"verdict"`
}

// Kinds of stop.
const (
	KindIdle     = "idle"
	KindMaxHours = "max_hours"
	KindJobEnd   = "job_end"
)

func (g *Guard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

func (g *Guard) logf(format string, args ...any) {
	if g.Log != nil {
		g.Log(format, args...)
	}
}

func (g *Guard) dir() string {
	if g.Dir != "" {
		return g.Dir
	}
	return DefaultDir
}

// ErrLocked: another guard already watches this target.
var ErrLocked = errors.New("another guard is running")

// Lock takes Dir/guard.lock for this process and writes its pid there; the lock is
// the kernel's (flock), so a guard that died leaves no stale lock. A second guard
// gets ErrLocked naming the pid of the first. release frees it.
func Lock(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	p := filepath.Join(dir, "guard.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	if err := flock(f); err != nil {
		b, _ := os.ReadFile(p)
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("guard: %w (pid %s holds %s)", ErrLocked, strings.TrimSpace(string(b)), p)
		}
		return nil, fmt.Errorf("guard: lock %s: %w", p, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return func() { f.Close() }, nil
}

// Run checks now and then every Every until ctx ends; it returns ctx.Err(). The
// caller holds the lock (Lock).
func (g *Guard) Run(ctx context.Context) error {
	if g.Stopper == nil {
		return errors.New("guard: no stopper")
	}
	every := g.Every
	if every <= 0 {
		every = DefaultEvery
	}
	if g.Started.IsZero() {
		g.Started = g.now()
	}
	g.logf("guard: watching %s: %s (started %s)", g.Stopper, g.Limits, g.Started.UTC().Format(time.RFC3339))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		g.Check(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Check looks once and stops the target if a limit is passed. It returns the verdict.
func (g *Guard) Check(ctx context.Context) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if g.Started.IsZero() {
		g.Started = now
	}
	if g.lastActive.IsZero() {
		g.lastActive = g.Started
		if g.lastActive.After(now) {
			g.lastActive = now
		}
	}
	g.refresh(ctx)
	if r, ok := g.Stopper.(Runner); ok {
		running, err := r.Running(ctx)
		switch {
		case err != nil:
			// What cannot be seen is not stopped: docker itself is failing.
			return g.note(now, "cannot see "+g.Stopper.String()+" ("+oneLine(err.Error())+"): not stopped")
		case !running:
			if !g.stopped {
				g.logf("guard: %s is not running: waiting for it to run", g.Stopper)
			}
			g.stopped = true
			return g.note(now, "not running; waiting for it to run")
		case g.stopped:
			// Started again (by a user, a deploy): a full idle limit, a fresh max-hours count,
			// from when it was seen running (docker inspect takes a while on a busy host).
			now = g.now()
			g.stopped, g.Started, g.lastActive, g.errs, g.failedStops, g.nextStop = false, now, now, 0, 0, time.Time{}
			g.logf("guard: %s runs: limits (%s) count from now", g.Stopper, g.Limits)
		}
	}

	if max := g.Limits.MaxDuration(); max > 0 {
		if ran := now.Sub(g.Started); ran >= max {
			return g.stop(ctx, now, KindMaxHours, fmt.Sprintf("running %s since its start (%s), max-hours %g",
				ran.Round(time.Second), g.Started.UTC().Format(time.RFC3339), g.Limits.MaxHours))
		}
	}
	var jobWhy string
	if g.Jobs != nil {
		js := g.Jobs.Look()
		if js.Active {
			g.lastActive, g.errs, g.sawJob = now, 0, true
			return g.note(now, "busy: "+js.Why)
		}
		if js.Seen {
			g.sawJob = true
		}
		if g.Limits.StopOnJobEnd && g.sawJob && js.Ended != "" {
			return g.stop(ctx, now, KindJobEnd, "training job ended: "+js.Ended)
		}
		jobWhy = js.Why
	}
	if g.Limits.IdleStop <= 0 {
		return g.note(now, "idle stop disabled")
	}
	busy, why, err := g.ask(ctx)
	unknown := ""
	switch {
	case busy:
		g.lastActive, g.errs = now, 0
		return g.note(now, "busy: "+why)
	case err != nil:
		g.errs++
		limit := g.ErrorLimit
		if limit <= 0 {
			limit = DefaultErrorLimit
		}
		if g.errs < limit {
			return g.note(now, fmt.Sprintf("activity unknown (%d of %d): %v", g.errs, limit, err))
		}
		unknown = fmt.Sprintf("; activity unknown %d checks in a row, counted as idle (%v)", g.errs, err)
	default:
		g.errs = 0
	}
	idle := now.Sub(g.lastActive)
	if idle >= g.Limits.IdleStop {
		return g.stop(ctx, now, KindIdle, fmt.Sprintf("idle %s (idle-stop %s, last active %s)%s",
			idle.Round(time.Second), g.Limits.IdleStop, g.lastActive.UTC().Format(time.RFC3339), unknown))
	}
	v := fmt.Sprintf("idle %s of %s", idle.Round(time.Second), g.Limits.IdleStop)
	if why != "" {
		v += " (" + why + ")"
	}
	if jobWhy != "" {
		v += " (" + jobWhy + ")"
	}
	return g.note(now, v+unknown)
}

// refresh reads the target's limits again (Refresh); a failure keeps the last ones
// and is logged once.
func (g *Guard) refresh(ctx context.Context) {
	if g.Refresh == nil {
		return
	}
	l, ok, err := g.Refresh(ctx)
	if err != nil {
		if msg := oneLine(err.Error()); msg != g.refreshErr {
			g.refreshErr = msg
			g.logf("guard: cannot read the limits of %s (%s): keeping %s", g.Stopper, msg, g.Limits)
		}
		return
	}
	g.refreshErr = ""
	if ok && l != g.Limits {
		g.logf("guard: %s now carries limits %s (were %s)", g.Stopper, l, g.Limits)
		g.Limits = l
	}
}

func (g *Guard) ask(ctx context.Context) (bool, string, error) {
	var failed []string
	var whys []string
	for i, p := range g.Probes {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		busy, why, err := p.Busy(pctx, store.Pod{}, provider.Pod{ID: g.Target, Status: provider.StatusRunning})
		cancel()
		name := fmt.Sprintf("probe %d", i+1)
		if n, ok := p.(interface{ Name() string }); ok {
			name = n.Name()
		}
		if busy {
			return true, name + ": " + why, nil
		}
		if err != nil {
			failed = append(failed, name+": "+oneLine(err.Error()))
		} else if why != "" {
			whys = append(whys, name+": "+why)
		}
	}
	if len(failed) > 0 && len(failed) == len(g.Probes) {
		return false, "", errors.New(strings.Join(failed, "; "))
	}
	return false, strings.Join(append(whys, failed...), "; "), nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// note writes state.json and returns the verdict.
func (g *Guard) note(now time.Time, verdict string) string {
	st := State{Target: g.Target, PID: os.Getpid(), Limits: g.Limits, Started: g.Started.UTC(), CheckedAt: now.UTC(),
		LastActive: g.lastActive.UTC(), IdleFor: max(now.Sub(g.lastActive), 0).Seconds(), Verdict: verdict}
	if b, err := json.MarshalIndent(st, "", "  "); err == nil {
		if err := atomicfile.WriteFile(filepath.Join(g.dir(), "state.json"), append(b, '\n'), 0o600); err != nil {
			g.logf("guard: cannot write state.json: %v", err)
		}
	}
	return verdict
}

// stop records the stop, then asks for it. A failure is retried at a later check,
// after the signals have been read again, backing off from Every (doubling, with
// jitter) up to MaxStopBackoff: an API that is down is not hammered, and a pod that
// became busy meanwhile is not stopped.
func (g *Guard) stop(ctx context.Context, now time.Time, kind, reason string) string {
	if now.Before(g.nextStop) {
		return g.note(now, fmt.Sprintf("stop failed %d time(s); next try in %s (reason: %s)", g.failedStops, g.nextStop.Sub(now).Round(time.Second), reason))
	}
	s := Stop{Target: g.Target, Reason: reason, Kind: kind, At: now.UTC(), By: "guard", Limits: g.Limits,
		Started: g.Started.UTC(), IdleFor: max(now.Sub(g.lastActive), 0).Seconds(), CostPerHr: g.CostPerHr}
	g.writeStop(s) // before asking: a RunPod stop kills this process
	g.logf("guard: stopping %s: %s", g.Stopper, reason)
	sctx, cancel := context.WithTimeout(ctx, DefaultStopTimeout)
	var err error
	if r, ok := g.Stopper.(ReasonStopper); ok {
		err = r.StopFor(sctx, s) // records why on the target itself (a StatefulSet's annotations)
	} else {
		err = g.Stopper.Stop(sctx)
	}
	cancel()
	if err != nil {
		s.Error = oneLine(err.Error())
		g.writeStop(s)
		g.failedStops++
		every := g.Every
		if every <= 0 {
			every = DefaultEvery
		}
		maxWait := g.MaxStopBackoff
		if maxWait <= 0 {
			maxWait = DefaultMaxStopBackoff
		}
		wait := httpx.Backoff{Min: every, Max: max(maxWait, every)}.Delay(g.failedStops, "")
		g.nextStop = now.Add(wait)
		g.logf("guard: stop %s failed (%d in a row), trying again in %s if still idle: %s", g.Stopper, g.failedStops, wait.Round(time.Millisecond), s.Error)
		return g.note(now, "stop failed: "+s.Error+" (reason: "+reason+")")
	}
	g.failedStops, g.nextStop = 0, time.Time{}
	s.Accepted = true
	g.writeStop(s)
	g.appendLedger(s)
	g.stopped = true
	g.logf("guard: stopped %s", g.Stopper)
	return g.note(now, "stopped: "+reason)
}

func (g *Guard) writeStop(s Stop) {
	b, _ := json.MarshalIndent(s, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(g.dir(), "stop.json"), append(b, '\n'), 0o600); err != nil {
		g.logf("guard: cannot write stop.json: %v", err)
	}
	if !s.Accepted && s.Error == "" {
		g.appendLedger(s) // the request line: a stop the process may not live to confirm
	}
}

func (g *Guard) appendLedger(s Stop) {
	b, _ := json.Marshal(s)
	f, err := os.OpenFile(filepath.Join(g.dir(), "stops.jsonl"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		g.logf("guard: cannot write stops.jsonl: %v", err)
		return
	}
	defer f.Close()
	f.Write(append(b, '\n'))
	f.Sync()
}

// ReadStop reads a stop.json (nil, nil when there is none).
func ReadStop(b []byte) (*Stop, error) {
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil, nil
	}
	var s Stop
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("guard: stop.json: %v", err)
	}
	return &s, nil
}
