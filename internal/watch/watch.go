// Package watch stops idle pods so that nobody pays for an idle GPU: the loop that
// `scopectl pod watch` (and later `scopectl serve`) runs.
//
// A Watcher looks only at pods scopectl recorded (store.PodStore): a pod in the
// provider's account that no live record names is never touched. On every Tick it
// lists the provider's pods once and, for each live record whose pod the provider
// reports RUNNING:
//
//   - running longer than the record's MaxHours since its CreatedAt: Stop, whatever
//     the probes say (a cap on spend, not an idleness rule; a pod restarted after
//     that is stopped again on the next tick until the record's MaxHours is raised);
//   - otherwise it asks the Probes whether the pod is busy (any one saying yes is
//     enough). Busy moves the pod's last-active time to now. When the pod has been
//     idle for at least the record's IdleStop since it was last active: Stop.
//
// The last-active time lives in memory, keyed by request id. The first time a
// Watcher sees a pod running it is seeded with the latest moment the pod is known
// to have (re)started: the record's CreatedAt, the provider's Pod.CreatedAt and StartedAt and,
// when the record last saw the pod stopped, that LastSeenAt. A pod this Watcher
// saw stopped and then running again is seeded with the time of that observation.
// So a watcher started late still stops a pod idle since its creation, and a pod a
// user restarts gets a full IdleStop.
//
// Probe errors: a tick where no probe said busy and some probe failed is "unknown".
// The first ErrorLimit-1 unknown ticks in a row neither stop the pod nor count as
// activity (one SSH hiccup must not stop a pod); from the ErrorLimit-th on, the pod
// counts as idle (a pod whose SSH never answers must not run forever), and the stop
// reason says so. Any answer resets the count.
//
// A stop is recorded in the store: LastSeenStatus EXITED, LastSeenAt now (the row
// is read again just before, so a concurrent `pod rm` is not undone).
//
// # What the probes rely on
//
// GPUProbe: gpu.GPU.UtilizationPct (NVML, or nvidia-smi's utilization.gpu, an
// instantaneous sample). GPU memory is deliberately not a signal: Scope keeps a
// loaded pipeline in VRAM while nobody uses it.
//
// ScopeProbe, from Daydream Scope's HTTP API (port 8000; on RunPod through the proxy
// the client is configured with, https://{podId}-8000.proxy.runpod.net by default):
//
//   - GET /api/v1/pipeline/status → {"status": not_loaded|loading|loaded|error,
//     "loading_stage", …} (/work/shared/reference/scope.md, "HTTP API"): "loading"
//     is busy. "loaded" alone is not: a loaded pipeline nobody streams from is idle.
//   - GET /api/v1/session/metrics → {"sessions": {"<id>": {frame stats}}, "gpu": {…}}:
//     a non-empty "sessions" is busy. Not in scope.md; from Scope's
//     src/scope/server/mcp_router.py (main 68b0f95, 2026-04-30, added 2026-03): it
//     lists the active session (WebRTC WebRTCManager.get_frame_processor skips
//     peer connections that are "closed" or "failed"; a headless session counts
//     only while its frame processor runs). A 404, or the web UI's index.html
//     that Scope's catch-all GET route serves for unknown paths (Scope before
//     March 2026), means "cannot tell", not an error: the pipeline status and the
//     GPU decide.
//   - With ScopeProbe.Pipelines: GET /api/v1/models/status?pipeline_id=… →
//     {"downloaded", "progress": {"is_downloading", …}|null} (scope.md lists the
//     endpoint; the fields are from app.py and download_progress_manager.py at the
//     same commit): a download in progress is busy.
package watch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/pods"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Decision actions.
const (
	ActionNone = "none"
	ActionStop = "stop"
)

// Defaults for the Watcher's zero fields.
const (
	DefaultErrorLimit   = 3
	DefaultProbeTimeout = 30 * time.Second
	DefaultParallel     = 8
)

// Decision is what one Tick decided about one live record.
type Decision struct {
	RequestID string `json:"request_id"`
	PodID     string `json:"pod_id,omitempty"`
	// Action is ActionStop when the pod was (asked to be) stopped this tick; Error
	// then says whether that failed.
	Action  string        `json:"action"`
	Reason  string        `json:"reason"`
	IdleFor time.Duration `json:"idle_for"` // since last active; 0 when busy or not running
	Error   string        `json:"error,omitempty"`
}

// Watcher stops idle pods. Provider and Store are required; the other fields have
// defaults. A Watcher must not be copied after first use; its Tick calls are
// serialised, so Run and an occasional Tick from elsewhere may share one.
type Watcher struct {
	Provider provider.Provider
	Store    store.PodStore
	// ProviderName, if set, is the store's name of Provider: records of other providers
	// (another cloud, SSH hosts) are not this Watcher's.
	ProviderName string
	// Probes say whether a pod is busy. With none, idleness is never established:
	// only MaxHours stops pods.
	Probes []Probe
	Now    func() time.Time                                 // default time.Now
	Log    func(format string, args ...any)                 // default: discard
	Sleep  func(ctx context.Context, d time.Duration) error // Run's wait; default a timer (tests pass a fake clock's)
	// OnTick, if set, receives each of Run's tick results.
	OnTick func(ds []Decision, err error)
	// OnStop, if set, is told of every stop the provider accepted (the cost ledger).
	OnStop func(rec store.Pod, pod provider.Pod, at time.Time, reason string, idleFor time.Duration)

	ErrorLimit   int           // consecutive unknown ticks before a pod counts as idle (default 3)
	ProbeTimeout time.Duration // bound on one probe call (default 30s)
	Parallel     int           // pods probed at once (default 8)

	mu    sync.Mutex
	state map[string]*podState // by request id
}

type podState struct {
	podID      string
	lastActive time.Time
	errs       int    // consecutive unknown ticks
	lastErr    string // the last probe error
	down       bool   // last seen not running by this Watcher
}

func (w *Watcher) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Watcher) logf(format string, args ...any) {
	if w.Log != nil {
		w.Log(format, args...)
	}
}

func (w *Watcher) errorLimit() int {
	if w.ErrorLimit > 0 {
		return w.ErrorLimit
	}
	return DefaultErrorLimit
}

// Run calls Tick now and then every `every` until ctx is done, and returns
// ctx.Err(). A failing Tick is logged (and passed to OnTick) and the loop goes on:
// a provider outage must not end the watch.
func (w *Watcher) Run(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		return fmt.Errorf("watch: interval %v must be positive", every)
	}
	if w.Provider == nil || w.Store == nil {
		return errors.New("watch: a Watcher needs a Provider and a Store")
	}
	sleep := w.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	for ctx.Err() == nil {
		ds, err := w.Tick(ctx)
		if err != nil && ctx.Err() == nil {
			w.logf("watch: %v", err)
		}
		if w.OnTick != nil {
			w.OnTick(ds, err)
		}
		if ctx.Err() != nil {
			break
		}
		if err := sleep(ctx, every); err != nil {
			break
		}
	}
	return ctx.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// verdict is what the probes said about one pod this tick.
type verdict struct {
	busy bool
	why  string // busy: which probe and why; idle: "" or a note
	err  error  // no probe said busy and one failed
}

// job is one live record matched to its provider pod.
type job struct {
	rec   store.Pod
	pod   *provider.Pod // nil: not found
	match string        // "" or a note on how the pod was found
	probe bool
	v     verdict
}

// Tick makes one pass over the live records and returns one Decision per record
// (in the store's order). Stops that failed and store writes that failed are
// returned together as the error, after the whole pass; a failure to list the
// records or the provider's pods stops the pass before anything is decided.
func (w *Watcher) Tick(ctx context.Context) ([]Decision, error) {
	if w.Provider == nil || w.Store == nil {
		return nil, errors.New("watch: a Watcher needs a Provider and a Store")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == nil {
		w.state = map[string]*podState{}
	}
	recs, err := w.Store.ListPods(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("watch: list recorded pods: %w", err)
	}
	pods, err := w.Provider.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch: list pods: %w", err)
	}
	now := w.now()

	byID, byTag := map[string]*provider.Pod{}, map[string]*provider.Pod{}
	for i := range pods {
		p := &pods[i]
		if p.Status == provider.StatusTerminated {
			continue
		}
		byID[p.ID] = p
		if p.Tag != "" && byTag[p.Tag] == nil {
			byTag[p.Tag] = p
		}
	}

	live := map[string]bool{}
	claimed := map[string]string{} // pod id → request id that claimed it this tick
	jobs := make([]*job, 0, len(recs))
	for _, rec := range recs {
		if rec.TerminatedAt != nil || rec.RequestID == "" {
			continue // a store that ignores liveOnly must not resurrect a record
		}
		if w.ProviderName != "" && rec.Provider != w.ProviderName {
			continue
		}
		live[rec.RequestID] = true
		j := &job{rec: rec}
		jobs = append(jobs, j)
		switch {
		case rec.ID != "":
			p := byID[rec.ID]
			if p != nil && p.Tag != "" && p.Tag != rec.RequestID {
				// The record names a pod that carries another scopectl request id: the
				// record is wrong, and the pod may belong to someone else's run.
				j.match = fmt.Sprintf("pod %s carries request id %q, not this record's: not touched", p.ID, p.Tag)
				continue
			}
			j.pod = p
		default:
			if p := byTag[rec.RequestID]; p != nil {
				j.pod, j.match = p, "found by its tag (create was interrupted)"
			}
		}
		if j.pod != nil {
			if other, ok := claimed[j.pod.ID]; ok {
				j.match = fmt.Sprintf("pod %s is also recorded as %s: handled there", j.pod.ID, other)
				j.pod = nil
				continue
			}
			claimed[j.pod.ID] = rec.RequestID
			j.rec = withPodLimits(j.rec, *j.pod)
		}
	}
	// Forget pods whose records are gone or terminated: the map stays bounded.
	for id := range w.state {
		if !live[id] {
			delete(w.state, id)
		}
	}

	// Decide which pods need probing, then probe them concurrently.
	for _, j := range jobs {
		if j.pod == nil || j.pod.Status != provider.StatusRunning {
			continue
		}
		if j.rec.MaxHours > 0 && now.Sub(j.rec.CreatedAt) >= maxDuration(j.rec.MaxHours) {
			continue // stopped whatever the probes say
		}
		j.probe = j.rec.IdleStop > 0 && len(w.Probes) > 0
	}
	w.probeAll(ctx, jobs)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	var errs []error
	out := make([]Decision, 0, len(jobs))
	for _, j := range jobs {
		d, err := w.decide(ctx, j, now)
		if err != nil {
			errs = append(errs, err)
		}
		out = append(out, d)
	}
	return out, errors.Join(errs...)
}

// withPodLimits is rec with the limits the pod itself carries (its environment, which
// the guard on the pod enforces too; pods.LimitsOf), so that every scopectl watching
// the pod applies the same limits whatever its own store recorded. A value the pod
// lacks or that cannot be read leaves the record's in place.
func withPodLimits(rec store.Pod, pod provider.Pod) store.Pod {
	l := pods.LimitsOf(pod, nil)
	if l == nil || !l.FromPod {
		return rec
	}
	if _, ok := pod.Env[provider.EnvIdleStop]; ok && !strings.Contains(l.Problem, provider.EnvIdleStop) {
		rec.IdleStop = l.IdleStop
	}
	if _, ok := pod.Env[provider.EnvMaxHours]; ok && !strings.Contains(l.Problem, provider.EnvMaxHours) {
		rec.MaxHours = l.MaxHours
	}
	return rec
}

// maxDuration converts MaxHours to a Duration, saturating instead of overflowing.
func maxDuration(hours float64) time.Duration {
	d := hours * float64(time.Hour)
	if d >= math.MaxInt64 || math.IsNaN(d) {
		return math.MaxInt64
	}
	return time.Duration(d)
}

func (w *Watcher) probeAll(ctx context.Context, jobs []*job) {
	n := w.Parallel
	if n <= 0 {
		n = DefaultParallel
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, j := range jobs {
		if !j.probe {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			j.v = w.ask(ctx, j.rec, *j.pod)
		}()
	}
	wg.Wait()
}

// ask runs the probes in order until one says busy.
func (w *Watcher) ask(ctx context.Context, rec store.Pod, pod provider.Pod) verdict {
	timeout := w.ProbeTimeout
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	var failed []string
	for i, pr := range w.Probes {
		if pr == nil {
			continue
		}
		busy, why, err := callProbe(ctx, timeout, pr, rec, pod)
		if busy {
			// A yes is a yes even from a probe that also reported an error.
			return verdict{busy: true, why: probeName(pr, i) + ": " + why}
		}
		if err != nil {
			failed = append(failed, probeName(pr, i)+": "+oneLine(err.Error()))
		}
	}
	if len(failed) > 0 {
		return verdict{err: errors.New(strings.Join(failed, "; "))}
	}
	return verdict{}
}

func callProbe(ctx context.Context, timeout time.Duration, pr Probe, rec store.Pod, pod provider.Pod) (busy bool, why string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			busy, why, err = false, "", fmt.Errorf("probe panicked: %v", r)
		}
	}()
	return pr.Busy(ctx, rec, pod)
}

func probeName(pr Probe, i int) string {
	if n, ok := pr.(interface{ Name() string }); ok {
		return n.Name()
	}
	return fmt.Sprintf("probe %d", i+1)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// seed is the latest moment pod is known to have (re)started, for a pod this
// Watcher has not watched before.
func seed(rec store.Pod, pod *provider.Pod, now time.Time) time.Time {
	t := rec.CreatedAt
	if pod.CreatedAt.After(t) {
		t = pod.CreatedAt
	}
	if pod.StartedAt.After(t) {
		t = pod.StartedAt
	}
	if rec.LastSeenAt != nil && rec.LastSeenStatus != provider.StatusRunning && rec.LastSeenAt.After(t) {
		t = *rec.LastSeenAt // it was seen stopped then: it started after that
	}
	if t.After(now) || t.IsZero() {
		t = now
	}
	return t
}

func (w *Watcher) decide(ctx context.Context, j *job, now time.Time) (Decision, error) {
	rec := j.rec
	d := Decision{RequestID: rec.RequestID, PodID: rec.ID, Action: ActionNone}
	st := w.state[rec.RequestID]
	if j.pod == nil {
		switch {
		case j.match != "":
			d.Reason = j.match
		case rec.ID == "":
			d.Reason = "no pod yet (" + strings.ToLower(cmpOr(rec.LastSeenStatus, "unknown")) + ")"
		default:
			d.Reason = "pod not found at the provider"
		}
		if st != nil {
			st.down = true
		}
		return d, nil
	}
	pod := j.pod
	d.PodID = pod.ID
	if st != nil && st.podID != pod.ID {
		st = nil // the record now names another pod: start over
	}
	if pod.Status != provider.StatusRunning {
		d.Reason = "pod is " + pod.Status
		if st == nil {
			st = &podState{podID: pod.ID}
			w.state[rec.RequestID] = st
		}
		st.down, st.errs, st.lastErr = true, 0, ""
		return d, w.noteStatus(ctx, rec, pod, now)
	}
	if st == nil {
		st = &podState{podID: pod.ID, lastActive: seed(rec, pod, now)}
		w.state[rec.RequestID] = st
	} else if st.down {
		st.down, st.lastActive, st.errs, st.lastErr = false, now, 0, ""
	}
	noteErr := w.noteStatus(ctx, rec, pod, now)
	suffix := ""
	if j.match != "" {
		suffix = " [" + j.match + "]"
	}

	if rec.MaxHours > 0 {
		if ran := now.Sub(rec.CreatedAt); ran >= maxDuration(rec.MaxHours) {
			d.IdleFor = max(now.Sub(st.lastActive), 0)
			reason := fmt.Sprintf("running %s since created (%s), max-hours %g", roundDur(ran), rec.CreatedAt.UTC().Format(time.RFC3339), rec.MaxHours)
			return w.stop(ctx, d, rec, pod, st, now, reason+suffix)
		}
	}
	if rec.IdleStop <= 0 {
		d.Reason = "idle stop disabled" + suffix
		return d, noteErr
	}
	if len(w.Probes) == 0 {
		d.Reason = "no activity probes: idleness unknown, only max-hours applies" + suffix
		return d, noteErr
	}

	v := j.v
	unknown := ""
	switch {
	case v.busy:
		st.lastActive, st.errs, st.lastErr = now, 0, ""
		d.Reason = "busy: " + v.why + suffix
		return d, noteErr
	case v.err != nil:
		st.errs++
		st.lastErr = v.err.Error()
		if st.errs < w.errorLimit() {
			d.IdleFor = max(now.Sub(st.lastActive), 0)
			d.Reason = fmt.Sprintf("activity unknown (probe failure %d of %d before it counts as idle): %s; idle %s of %s",
				st.errs, w.errorLimit(), st.lastErr, roundDur(d.IdleFor), rec.IdleStop) + suffix
			return d, noteErr
		}
		unknown = fmt.Sprintf("; activity unknown: probes failed %d times in a row, counted as idle (last: %s)", st.errs, st.lastErr)
	default:
		st.errs, st.lastErr = 0, ""
	}
	d.IdleFor = max(now.Sub(st.lastActive), 0)
	if d.IdleFor >= rec.IdleStop {
		reason := fmt.Sprintf("idle %s (idle-stop %s, last active %s)%s", roundDur(d.IdleFor), rec.IdleStop,
			st.lastActive.UTC().Format(time.RFC3339), unknown)
		return w.stop(ctx, d, rec, pod, st, now, reason+suffix)
	}
	d.Reason = fmt.Sprintf("idle %s of %s", roundDur(d.IdleFor), rec.IdleStop) + unknown
	if v.why != "" {
		d.Reason += " (" + v.why + ")"
	}
	d.Reason += suffix
	return d, noteErr
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func roundDur(d time.Duration) time.Duration {
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

func (w *Watcher) stop(ctx context.Context, d Decision, rec store.Pod, pod *provider.Pod, st *podState, now time.Time, reason string) (Decision, error) {
	d.Action, d.Reason = ActionStop, reason
	if err := w.Provider.Stop(ctx, pod.ID); err != nil {
		d.Error = oneLine(err.Error())
		w.logf("watch: stop pod %s (%s) failed: %v; reason: %s", pod.ID, rec.RequestID, err, reason)
		return d, fmt.Errorf("watch: stop pod %s (%s): %w", pod.ID, rec.RequestID, err)
	}
	w.logf("watch: stopped pod %s (%s): %s", pod.ID, rec.RequestID, reason)
	if w.OnStop != nil {
		idle := time.Duration(0)
		if strings.HasPrefix(reason, "idle ") {
			idle = d.IdleFor
		}
		w.OnStop(rec, *pod, now, reason, idle)
	}
	st.down, st.errs, st.lastErr = true, 0, ""
	if err := w.record(ctx, rec.RequestID, pod.ID, provider.StatusExited, now); err != nil {
		d.Error = "stopped, but the store was not updated: " + oneLine(err.Error())
		return d, err
	}
	return d, nil
}

// noteStatus records a status the provider reports that differs from the record's.
func (w *Watcher) noteStatus(ctx context.Context, rec store.Pod, pod *provider.Pod, now time.Time) error {
	if rec.LastSeenStatus == pod.Status && rec.ID == pod.ID {
		return nil
	}
	return w.record(ctx, rec.RequestID, pod.ID, pod.Status, now)
}

// record sets a record's pod id, LastSeenStatus and LastSeenAt, on a fresh read of
// the row so that fields written meanwhile (a `pod rm`'s TerminatedAt) survive. A
// record that is gone or terminated by now is left as it is.
func (w *Watcher) record(ctx context.Context, requestID, podID, status string, now time.Time) error {
	rec, err := w.Store.GetPod(ctx, requestID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted meanwhile: not to be written back
	}
	if err != nil {
		return fmt.Errorf("watch: record %s: %w", requestID, err)
	}
	if rec.RequestID != requestID || rec.TerminatedAt != nil {
		return nil
	}
	if rec.ID == "" {
		rec.ID = podID
	}
	t := now.UTC()
	rec.LastSeenStatus, rec.LastSeenAt = status, &t
	if err := w.Store.PutPod(ctx, rec); err != nil {
		return fmt.Errorf("watch: record %s: %w", requestID, err)
	}
	return nil
}
