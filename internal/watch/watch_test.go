package watch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
)

const (
	testKey = "rpa_TESTKEYwatchwatchwatchwatch0123456789"
	gpu4090 = "NVIDIA GeForce RTX 4090"
)

// clock is a fake clock. It starts two days after the real time: the fake RunPod
// server stamps pods with the real time, so every record's CreatedAt (set from this
// clock, possibly hours in its past) is later than the pod's own CreatedAt and the
// tests control the seed of the idle timer.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Add(48 * time.Hour).Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// gpus is a fake fleet of GPUs: utilisation (or an error) per pod id.
type gpus struct {
	mu    sync.Mutex
	util  map[string]int
	err   map[string]error
	calls map[string]int
}

func newGPUs() *gpus {
	return &gpus{util: map[string]int{}, err: map[string]error{}, calls: map[string]int{}}
}

func (g *gpus) set(podID string, util int, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.util[podID], g.err[podID] = util, err
}

func (g *gpus) called(podID string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[podID]
}

type gpuSource struct {
	g  *gpus
	id string
}

func (s gpuSource) GPUs(context.Context) ([]gpu.GPU, error) {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	s.g.calls[s.id]++
	if err := s.g.err[s.id]; err != nil {
		return nil, err
	}
	return []gpu.GPU{{Index: 0, Name: "NVIDIA GeForce RTX 4090", MemoryUsedMiB: 20000, UtilizationPct: s.g.util[s.id]}}, nil
}

func (g *gpus) probe() GPUProbe {
	return GPUProbe{Source: func(_ context.Context, p provider.Pod) (gpu.Source, error) {
		return gpuSource{g: g, id: p.ID}, nil
	}}
}

type env struct {
	t     *testing.T
	srv   *runpodtest.Server
	c     *runpod.Client
	st    *store.SQLite
	clk   *clock
	gpus  *gpus
	w     *Watcher
	logMu sync.Mutex
	log   bytes.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, clk: newClock(), gpus: newGPUs()}
	e.srv = runpodtest.New(t, runpodtest.Options{APIKey: testKey, BootDelay: 10 * time.Millisecond})
	c, err := runpod.New(runpod.Options{APIKey: secret.New(testKey), APIURL: e.srv.RESTURL(), GraphQLURL: e.srv.GraphQLURL(),
		RequestTimeout: 2 * time.Second, CreateTimeout: 2 * time.Second, MaxAttempts: 3,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, SettleWindow: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	e.st, err = store.OpenSQLite(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	e.w = &Watcher{Provider: c, Store: e.st, Probes: []Probe{e.gpus.probe()}, Now: e.clk.Now,
		Log: func(f string, a ...any) {
			e.logMu.Lock()
			defer e.logMu.Unlock()
			fmt.Fprintf(&e.log, f+"\n", a...)
		}}
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// create makes a running pod tagged reqID; unless rec is nil, it is recorded with
// the given limits and CreatedAt = the clock's now (rec.CreatedAt, when set, wins).
func (e *env) create(reqID string, rec *store.Pod) provider.Pod {
	e.t.Helper()
	p, err := e.c.Create(ctxT(e.t), provider.CreateSpec{Name: "scope", GPUType: gpu4090, Image: "daydreamlive/scope:main",
		VolumeGB: 20, Ports: []string{"8000/http", "22/tcp"}, RequestID: reqID})
	if err != nil {
		e.t.Fatal(err)
	}
	pod := e.waitStatus(p.ID, provider.StatusRunning)
	if rec != nil {
		rec.RequestID, rec.Provider, rec.ID, rec.Name = reqID, runpod.Name, p.ID, p.Name
		if rec.CreatedAt.IsZero() {
			rec.CreatedAt = e.clk.Now()
		}
		if rec.LastSeenStatus == "" {
			rec.LastSeenStatus = p.Status
		}
		if err := e.st.PutPod(ctxT(e.t), *rec); err != nil {
			e.t.Fatal(err)
		}
	}
	return pod
}

// createUntagged makes a running pod the way someone else would, through the API
// without scopectl: no SCOPECTL_REQUEST_ID, a name scopectl would not give.
func (e *env) createUntagged(name string) string {
	e.t.Helper()
	body := `{"name":"` + name + `","imageName":"runpod/pytorch","gpuTypeIds":["` + gpu4090 + `"]}`
	req, _ := http.NewRequest(http.MethodPost, e.srv.RESTURL()+"/pods", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusCreated || p.ID == "" {
		e.t.Fatalf("create: %s %v", resp.Status, err)
	}
	if got := e.waitStatus(p.ID, provider.StatusRunning); got.Tag != "" {
		e.t.Fatalf("untagged pod has tag %q", got.Tag)
	}
	return p.ID
}

func (e *env) waitStatus(id, status string) provider.Pod {
	e.t.Helper()
	for i := 0; i < 500; i++ {
		p, err := e.c.Get(ctxT(e.t), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if p.Status == status {
			return *p
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.t.Fatalf("pod %s never became %s", id, status)
	return provider.Pod{}
}

// status is the fake server's own view of a pod.
func (e *env) status(id string) string {
	for _, p := range e.srv.Pods() {
		if p.ID == id {
			return p.Status
		}
	}
	return "GONE"
}

func (e *env) tick() []Decision {
	e.t.Helper()
	ds, err := e.w.Tick(ctxT(e.t))
	if err != nil {
		e.t.Fatalf("tick: %v", err)
	}
	return ds
}

func find(t *testing.T, ds []Decision, reqID string) Decision {
	t.Helper()
	for _, d := range ds {
		if d.RequestID == reqID {
			return d
		}
	}
	t.Fatalf("no decision for %s in %+v", reqID, ds)
	return Decision{}
}

func (e *env) stops() int { return e.srv.Count("POST /pods/{id}/stop") }

// A pod whose GPU stays idle is stopped on the first tick at or after IdleStop, not
// before; the stop is recorded; the next tick leaves the stopped pod alone.
func TestIdleStopAtLimit(t *testing.T) {
	e := newEnv(t)
	t0 := e.clk.Now()
	pod := e.create("sc-idle", &store.Pod{IdleStop: 30 * time.Minute})
	e.gpus.set(pod.ID, 0, nil)

	for _, at := range []time.Duration{0, 10 * time.Minute, 29*time.Minute + 59*time.Second} {
		e.clk.Set(t0.Add(at))
		d := find(t, e.tick(), "sc-idle")
		if d.Action != ActionNone || d.IdleFor != at || d.PodID != pod.ID {
			t.Fatalf("at %v: %+v", at, d)
		}
	}
	if e.status(pod.ID) != provider.StatusRunning || e.stops() != 0 {
		t.Fatal("stopped early")
	}
	e.clk.Set(t0.Add(30 * time.Minute))
	d := find(t, e.tick(), "sc-idle")
	if d.Action != ActionStop || d.IdleFor != 30*time.Minute || !strings.Contains(d.Reason, "idle 30m0s") || d.Error != "" {
		t.Fatalf("%+v", d)
	}
	if got := e.status(pod.ID); got != provider.StatusExited {
		t.Fatalf("pod is %s", got)
	}
	rec, err := e.st.GetPod(ctxT(t), "sc-idle")
	if err != nil || rec.LastSeenStatus != provider.StatusExited || rec.LastSeenAt == nil || !rec.LastSeenAt.Equal(t0.Add(30*time.Minute)) || rec.TerminatedAt != nil {
		t.Fatalf("record %+v %v", rec, err)
	}
	e.clk.Advance(time.Minute)
	d = find(t, e.tick(), "sc-idle")
	if d.Action != ActionNone || !strings.Contains(d.Reason, "EXITED") || e.stops() != 1 {
		t.Fatalf("after stop: %+v, %d stops", d, e.stops())
	}
	if !strings.Contains(e.log.String(), "stopped pod "+pod.ID) {
		t.Errorf("log: %s", e.log.String())
	}
}

// Run with a 10 s interval (simulated): the idle pod is stopped within 60 s of the
// moment its idle limit passes, and Run ends when its context does.
func TestRunStopsWithinAMinuteOfLimit(t *testing.T) {
	e := newEnv(t)
	const idle = 30 * time.Minute
	created := e.clk.Now().Add(-7 * time.Second) // ticks do not line up with the limit
	pod := e.create("sc-run", &store.Pod{IdleStop: idle, CreatedAt: created})
	e.gpus.set(pod.ID, 0, nil)
	limit := created.Add(idle)

	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	sleeps, ticks := 0, 0
	var stoppedAt time.Time
	e.w.OnTick = func(ds []Decision, err error) {
		ticks++
		if err != nil {
			t.Errorf("tick: %v", err)
		}
		if d := find(t, ds, "sc-run"); d.Action == ActionStop {
			stoppedAt = e.clk.Now()
			cancel()
		}
	}
	e.w.Sleep = func(ctx context.Context, d time.Duration) error {
		if d != 10*time.Second {
			t.Errorf("sleep %v", d)
		}
		if sleeps++; sleeps > 1000 { // bound: 1000 × 10 s is far past the limit
			t.Error("Run never stopped the pod")
			cancel()
			return ctx.Err()
		}
		e.clk.Advance(d)
		return ctx.Err()
	}
	if err := e.w.Run(ctx, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if stoppedAt.IsZero() {
		t.Fatal("not stopped")
	}
	late := stoppedAt.Sub(limit)
	if late < 0 || late > time.Minute {
		t.Fatalf("stopped %v after the limit (want 0..60s)", late)
	}
	if late >= 10*time.Second {
		t.Errorf("stopped %v after the limit: more than one 10 s interval", late)
	}
	if e.status(pod.ID) != provider.StatusExited || e.stops() != 1 {
		t.Fatalf("pod %s, %d stops", e.status(pod.ID), e.stops())
	}
	t.Logf("limit passed at +%v, stopped %v later, after %d ticks", idle, late, ticks)
}

func TestRunArgs(t *testing.T) {
	e := newEnv(t)
	if err := e.w.Run(ctxT(t), 0); err == nil {
		t.Error("zero interval accepted")
	}
	if err := (&Watcher{}).Run(ctxT(t), time.Second); err == nil {
		t.Error("Watcher without provider accepted")
	}
	if _, err := (&Watcher{}).Tick(ctxT(t)); err == nil {
		t.Error("Tick without provider accepted")
	}
	// A cancelled context ends Run after at most one tick, with the real sleep.
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	e.w.OnTick = func([]Decision, error) { n++; cancel() }
	if err := e.w.Run(ctx, time.Hour); !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("%v after %d ticks", err, n)
	}
}

// A busy pod is never stopped by the idle rule, however long it runs.
func TestBusyNotStopped(t *testing.T) {
	e := newEnv(t)
	pod := e.create("sc-busy", &store.Pod{IdleStop: 10 * time.Minute})
	e.gpus.set(pod.ID, 73, nil)
	for i := 0; i < 48; i++ { // 8 hours in 10-minute ticks
		d := find(t, e.tick(), "sc-busy")
		if d.Action != ActionNone || d.IdleFor != 0 || !strings.Contains(d.Reason, "busy: gpu: GPU 0 at 73%") {
			t.Fatalf("tick %d: %+v", i, d)
		}
		e.clk.Advance(10 * time.Minute)
	}
	if e.status(pod.ID) != provider.StatusRunning || e.stops() != 0 {
		t.Fatal("busy pod stopped")
	}
}

// Idle, then busy, then idle again: the timer restarts at the last busy tick.
func TestIdleBusyIdleResets(t *testing.T) {
	e := newEnv(t)
	t0 := e.clk.Now()
	pod := e.create("sc-reset", &store.Pod{IdleStop: 30 * time.Minute})
	at := func(m int, util int) Decision {
		e.clk.Set(t0.Add(time.Duration(m) * time.Minute))
		e.gpus.set(pod.ID, util, nil)
		return find(t, e.tick(), "sc-reset")
	}
	for _, m := range []int{0, 10, 20, 29} {
		if d := at(m, 0); d.Action != ActionNone {
			t.Fatalf("%d min: %+v", m, d)
		}
	}
	if d := at(29, 12); d.Action != ActionNone || !strings.HasPrefix(d.Reason, "busy") {
		t.Fatalf("busy: %+v", d)
	}
	for _, m := range []int{31, 40, 58} {
		d := at(m, 0)
		if d.Action != ActionNone || d.IdleFor != time.Duration(m-29)*time.Minute {
			t.Fatalf("%d min: %+v", m, d)
		}
	}
	if d := at(59, 0); d.Action != ActionStop || d.IdleFor != 30*time.Minute {
		t.Fatalf("59 min: %+v", d)
	}
}

// MaxHours stops a pod however busy it is, counted from the record's CreatedAt.
func TestMaxHours(t *testing.T) {
	e := newEnv(t)
	t0 := e.clk.Now()
	busy := e.create("sc-max", &store.Pod{IdleStop: 30 * time.Minute, MaxHours: 2})
	noIdle := e.create("sc-max-noidle", &store.Pod{MaxHours: 0.5, CreatedAt: t0.Add(-10 * time.Minute)})
	e.gpus.set(busy.ID, 100, nil)
	e.gpus.set(noIdle.ID, 0, nil)

	e.clk.Set(t0.Add(19 * time.Minute))
	ds := e.tick()
	if d := find(t, ds, "sc-max-noidle"); d.Action != ActionNone || !strings.Contains(d.Reason, "idle stop disabled") {
		t.Fatalf("%+v", d)
	}
	if e.gpus.called(noIdle.ID) != 0 {
		t.Error("a pod without idle stop was probed")
	}
	e.clk.Set(t0.Add(20 * time.Minute))
	if d := find(t, e.tick(), "sc-max-noidle"); d.Action != ActionStop || !strings.Contains(d.Reason, "max-hours 0.5") {
		t.Fatalf("%+v", d)
	}
	e.clk.Set(t0.Add(2*time.Hour - time.Second))
	if d := find(t, e.tick(), "sc-max"); d.Action != ActionNone {
		t.Fatalf("%+v", d)
	}
	calls := e.gpus.called(busy.ID)
	e.clk.Set(t0.Add(2 * time.Hour))
	d := find(t, e.tick(), "sc-max")
	if d.Action != ActionStop || !strings.Contains(d.Reason, "running 2h0m0s since created") || !strings.Contains(d.Reason, "max-hours 2") {
		t.Fatalf("%+v", d)
	}
	if e.gpus.called(busy.ID) != calls {
		t.Error("probed a pod past max-hours")
	}
	if e.status(busy.ID) != provider.StatusExited || e.status(noIdle.ID) != provider.StatusExited {
		t.Fatal("not stopped")
	}
}

// The first probe errors keep the pod running and do not count as activity; from
// the third in a row the pod counts as idle, and the reason says so.
func TestProbeErrors(t *testing.T) {
	e := newEnv(t)
	t0 := e.clk.Now()
	flaky := e.create("sc-flaky", &store.Pod{IdleStop: 30 * time.Minute})
	dead := e.create("sc-dead", &store.Pod{IdleStop: 30 * time.Minute})
	busyFlaky := e.create("sc-busy-flaky", &store.Pod{IdleStop: 30 * time.Minute})
	sshErr := errors.New("ssh: handshake failed: EOF")
	e.gpus.set(dead.ID, 0, sshErr)

	step := func(m int, flakyErr, busyErr error) []Decision {
		e.clk.Set(t0.Add(time.Duration(m) * time.Minute))
		e.gpus.set(flaky.ID, 0, flakyErr)
		if busyErr != nil {
			e.gpus.set(busyFlaky.ID, 0, busyErr)
		} else {
			e.gpus.set(busyFlaky.ID, 90, nil)
		}
		return e.tick()
	}
	// flaky: idle at 0..28 min, SSH fails at 29, 30, 31, 32 → stopped at 31 (third failure), not at 30.
	// dead: SSH never answers: kept while failures < 3 or idle < 30 min; stopped at 30 min.
	// busyFlaky: busy, with failures that never reach 3 in a row: never stopped.
	plan := []struct {
		m                 int
		flakyErr, busyErr error
		flakyAct, deadAct string
		flakyHas, deadHas string
	}{
		{0, nil, sshErr, ActionNone, ActionNone, "idle 0s", "failure 1 of 3"},
		{10, nil, sshErr, ActionNone, ActionNone, "idle 10m", "failure 2 of 3"},
		{20, nil, nil, ActionNone, ActionNone, "idle 20m", "counted as idle"},
		{28, nil, sshErr, ActionNone, ActionNone, "idle 28m", "idle 28m"},
		{29, sshErr, sshErr, ActionNone, ActionNone, "failure 1 of 3", "idle 29m"},
		{30, sshErr, nil, ActionNone, ActionStop, "failure 2 of 3", "failed 6 times in a row"},
		{31, sshErr, sshErr, ActionStop, ActionNone, "failed 3 times in a row", "EXITED"},
	}
	for _, s := range plan {
		ds := step(s.m, s.flakyErr, s.busyErr)
		f, d, b := find(t, ds, "sc-flaky"), find(t, ds, "sc-dead"), find(t, ds, "sc-busy-flaky")
		if f.Action != s.flakyAct || !strings.Contains(f.Reason, s.flakyHas) {
			t.Fatalf("%d min, flaky: %+v (want %s, %q)", s.m, f, s.flakyAct, s.flakyHas)
		}
		if d.Action != s.deadAct || !strings.Contains(d.Reason, s.deadHas) {
			t.Fatalf("%d min, dead: %+v (want %s, %q)", s.m, d, s.deadAct, s.deadHas)
		}
		if b.Action != ActionNone {
			t.Fatalf("%d min, busy pod with failing probes: %+v", s.m, b)
		}
		if s.flakyErr != nil && !strings.Contains(f.Reason, "ssh: handshake failed") {
			t.Errorf("reason does not say why: %q", f.Reason)
		}
	}
	if d := find(t, step(31, sshErr, nil), "sc-flaky"); !strings.Contains(d.Reason, "EXITED") {
		t.Fatalf("%+v", d)
	}
	if e.status(busyFlaky.ID) != provider.StatusRunning {
		t.Fatal("busy pod with flaky probes stopped")
	}
	if e.stops() != 2 {
		t.Fatalf("%d stops", e.stops())
	}
}

// A failure, then a good answer, then failures again: the count starts over, and
// failures never count as activity (the idle time keeps running through them).
func TestProbeErrorCountResets(t *testing.T) {
	e := newEnv(t)
	t0 := e.clk.Now()
	pod := e.create("sc-reset-errs", &store.Pod{IdleStop: time.Hour})
	fail := errors.New("timeout")
	for i, s := range []struct {
		err  error
		want string
	}{{fail, "1 of 3"}, {fail, "2 of 3"}, {nil, "idle 2m"}, {fail, "1 of 3"}, {fail, "2 of 3"}, {fail, "counted as idle"}, {fail, "failed 4 times"}} {
		e.clk.Set(t0.Add(time.Duration(i) * time.Minute))
		e.gpus.set(pod.ID, 0, s.err)
		d := find(t, e.tick(), "sc-reset-errs")
		if d.Action != ActionNone || !strings.Contains(d.Reason, s.want) || d.IdleFor != time.Duration(i)*time.Minute {
			t.Fatalf("step %d: %+v (want %q)", i, d, s.want)
		}
	}
}

// A probe that hangs is cut off by ProbeTimeout and counts as a failure; a probe
// that panics counts as a failure too; a probe saying busy wins over one failing.
func TestProbeTimeoutPanicAndOrder(t *testing.T) {
	e := newEnv(t)
	e.create("sc-hang", &store.Pod{IdleStop: time.Minute})
	hang := ProbeFunc(func(ctx context.Context, _ store.Pod, _ provider.Pod) (bool, string, error) {
		<-ctx.Done()
		return false, "", ctx.Err()
	})
	panicky := ProbeFunc(func(context.Context, store.Pod, provider.Pod) (bool, string, error) { panic("boom") })
	e.w.Probes = []Probe{hang, panicky}
	e.w.ProbeTimeout = 20 * time.Millisecond
	start := time.Now()
	d := find(t, e.tick(), "sc-hang")
	if time.Since(start) > 10*time.Second {
		t.Fatalf("tick took %v", time.Since(start))
	}
	if d.Action != ActionNone || !strings.Contains(d.Reason, "probe 1: context deadline exceeded") || !strings.Contains(d.Reason, "probe 2: probe panicked: boom") {
		t.Fatalf("%+v", d)
	}
	yes := ProbeFunc(func(context.Context, store.Pod, provider.Pod) (bool, string, error) {
		return true, "training step 412", errors.New("partial")
	})
	e.w.Probes = []Probe{panicky, yes}
	e.clk.Advance(time.Hour)
	if d := find(t, e.tick(), "sc-hang"); d.Action != ActionNone || d.Reason != "busy: probe 2: training step 412" {
		t.Fatalf("%+v", d)
	}
}

// With no probes, idleness is never concluded; only max-hours applies.
func TestNoProbes(t *testing.T) {
	e := newEnv(t)
	e.w.Probes = nil
	pod := e.create("sc-noprobe", &store.Pod{IdleStop: time.Minute})
	e.clk.Advance(24 * time.Hour)
	d := find(t, e.tick(), "sc-noprobe")
	if d.Action != ActionNone || !strings.Contains(d.Reason, "no activity probes") || e.status(pod.ID) != provider.StatusRunning {
		t.Fatalf("%+v", d)
	}
}

// Pods scopectl did not record are never touched: an untagged pod, a tagged pod
// without a record, and a pod that a record names but that carries another
// request id. All idle for days; only the recorded pod is stopped.
func TestForeignPodsNeverTouched(t *testing.T) {
	e := newEnv(t)
	foreign := e.createUntagged("someone-elses-pod") // no tag, no record
	untracked := e.create("sc-not-recorded", nil)
	mine := e.create("sc-mine", &store.Pod{IdleStop: time.Minute})
	other := e.create("sc-other", nil)
	// A record that points at a pod tagged with another request id.
	if err := e.st.PutPod(ctxT(t), store.Pod{RequestID: "sc-confused", Provider: runpod.Name, ID: other.ID,
		IdleStop: time.Minute, CreatedAt: e.clk.Now(), LastSeenStatus: provider.StatusRunning}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{foreign, untracked.ID, mine.ID, other.ID} {
		e.gpus.set(id, 0, nil)
	}
	e.clk.Advance(72 * time.Hour)
	ds := e.tick()
	if len(ds) != 2 {
		t.Fatalf("decisions for unrecorded pods: %+v", ds)
	}
	if d := find(t, ds, "sc-mine"); d.Action != ActionStop {
		t.Fatalf("%+v", d)
	}
	if d := find(t, ds, "sc-confused"); d.Action != ActionNone || !strings.Contains(d.Reason, `carries request id "sc-other"`) {
		t.Fatalf("%+v", d)
	}
	for _, id := range []string{foreign, untracked.ID, other.ID} {
		if e.status(id) != provider.StatusRunning {
			t.Errorf("pod %s not recorded by scopectl was stopped", id)
		}
		if e.gpus.called(id) != 0 {
			t.Errorf("pod %s not recorded by scopectl was probed", id)
		}
	}
	if e.stops() != 1 {
		t.Fatalf("%d stops", e.stops())
	}
}

// Terminated records are skipped even if their pod still runs; records without a
// pod, or whose pod is gone, are reported and left alone.
func TestTerminatedAndMissing(t *testing.T) {
	e := newEnv(t)
	pod := e.create("sc-term", &store.Pod{IdleStop: time.Minute})
	rec, _ := e.st.GetPod(ctxT(t), "sc-term")
	now := e.clk.Now()
	rec.TerminatedAt, rec.LastSeenStatus = &now, provider.StatusTerminated
	e.st.PutPod(ctxT(t), rec)
	e.st.PutPod(ctxT(t), store.Pod{RequestID: "sc-creating", Provider: runpod.Name, IdleStop: time.Minute, CreatedAt: now, LastSeenStatus: provider.StatusCreating})
	e.st.PutPod(ctxT(t), store.Pod{RequestID: "sc-gone", Provider: runpod.Name, ID: "gonepod123", IdleStop: time.Minute, CreatedAt: now, LastSeenStatus: provider.StatusRunning})
	e.gpus.set(pod.ID, 0, nil)
	e.clk.Advance(time.Hour)
	ds := e.tick()
	for _, d := range ds {
		if d.RequestID == "sc-term" {
			t.Fatalf("terminated record decided: %+v", d)
		}
	}
	if d := find(t, ds, "sc-creating"); d.Action != ActionNone || d.Reason != "no pod yet (creating)" {
		t.Fatalf("%+v", d)
	}
	if d := find(t, ds, "sc-gone"); d.Action != ActionNone || d.Reason != "pod not found at the provider" {
		t.Fatalf("%+v", d)
	}
	if e.status(pod.ID) != provider.StatusRunning || e.stops() != 0 || e.gpus.called(pod.ID) != 0 {
		t.Fatal("terminated record's pod touched")
	}
}

// A record left without a pod id by an interrupted create is matched to its pod by
// the tag; the pod is managed like any other and the id is recorded.
func TestInterruptedCreateFoundByTag(t *testing.T) {
	e := newEnv(t)
	pod := e.create("sc-crash", nil)
	if err := e.st.PutPod(ctxT(t), store.Pod{RequestID: "sc-crash", Provider: runpod.Name, IdleStop: 5 * time.Minute,
		CreatedAt: e.clk.Now(), LastSeenStatus: provider.StatusCreating}); err != nil {
		t.Fatal(err)
	}
	e.gpus.set(pod.ID, 0, nil)
	d := find(t, e.tick(), "sc-crash")
	if d.PodID != pod.ID || !strings.Contains(d.Reason, "found by its tag") {
		t.Fatalf("%+v", d)
	}
	rec, _ := e.st.GetPod(ctxT(t), "sc-crash")
	if rec.ID != pod.ID || rec.LastSeenStatus != provider.StatusRunning {
		t.Fatalf("record %+v", rec)
	}
	e.clk.Advance(5 * time.Minute)
	if d := find(t, e.tick(), "sc-crash"); d.Action != ActionStop {
		t.Fatalf("%+v", d)
	}
}

// A watcher started late stops a pod idle since its creation at once; a pod the
// watcher stopped and a user restarted gets a full idle period again; a record that
// says the pod was last seen stopped seeds the timer from then.
func TestSeeding(t *testing.T) {
	e := newEnv(t)
	t0 := e.clk.Now()
	old := e.create("sc-old", &store.Pod{IdleStop: 30 * time.Minute, CreatedAt: t0.Add(-2 * time.Hour)})
	stoppedAt := t0.Add(-10 * time.Minute)
	restarted := e.create("sc-restarted", &store.Pod{IdleStop: 30 * time.Minute, CreatedAt: t0.Add(-2 * time.Hour),
		LastSeenStatus: provider.StatusExited, LastSeenAt: &stoppedAt})
	// A pod RunPod says was (re)started 20 minutes ago (lastStartedAt), unseen by anyone.
	started := e.create("sc-started", &store.Pod{IdleStop: 30 * time.Minute, CreatedAt: t0.Add(-2 * time.Hour)})
	e.srv.SetTimes(started.ID, t0.Add(-2*time.Hour), t0.Add(-20*time.Minute))
	e.gpus.set(started.ID, 0, nil)
	e.gpus.set(old.ID, 0, nil)
	e.gpus.set(restarted.ID, 0, nil)
	ds := e.tick()
	if d := find(t, ds, "sc-started"); d.Action != ActionNone || d.IdleFor != 20*time.Minute {
		t.Fatalf("seeded from lastStartedAt: %+v", d)
	}
	if d := find(t, ds, "sc-old"); d.Action != ActionStop || d.IdleFor != 2*time.Hour {
		t.Fatalf("%+v", d)
	}
	if d := find(t, ds, "sc-restarted"); d.Action != ActionNone || d.IdleFor != 10*time.Minute {
		t.Fatalf("%+v", d)
	}
	// The user starts the stopped pod again.
	e.clk.Advance(time.Hour)
	if d := find(t, e.tick(), "sc-old"); !strings.Contains(d.Reason, "EXITED") {
		t.Fatalf("%+v", d)
	}
	if err := e.c.Start(ctxT(t), old.ID); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(old.ID, provider.StatusRunning)
	e.clk.Advance(time.Minute)
	restartSeen := e.clk.Now()
	if d := find(t, e.tick(), "sc-old"); d.Action != ActionNone || d.IdleFor != 0 {
		t.Fatalf("after restart: %+v", d)
	}
	e.clk.Set(restartSeen.Add(29 * time.Minute))
	if d := find(t, e.tick(), "sc-old"); d.Action != ActionNone {
		t.Fatalf("%+v", d)
	}
	e.clk.Set(restartSeen.Add(30 * time.Minute))
	if d := find(t, e.tick(), "sc-old"); d.Action != ActionStop {
		t.Fatalf("%+v", d)
	}
}

// A failed stop is reported (decision and error) and retried on the next tick;
// other pods are still handled in the same tick.
func TestStopFailureRetried(t *testing.T) {
	e := newEnv(t)
	a := e.create("sc-a", &store.Pod{IdleStop: time.Minute})
	b := e.create("sc-b", &store.Pod{IdleStop: time.Minute})
	e.gpus.set(a.ID, 0, nil)
	e.gpus.set(b.ID, 0, nil)
	e.clk.Advance(2 * time.Minute)
	e.srv.Inject(runpodtest.Fault{Route: "POST /pods/{id}/stop", Kind: runpodtest.ServerError, Status: 500, Times: 3})
	ds, err := e.w.Tick(ctxT(t))
	if err == nil {
		t.Fatal("no error for a failed stop")
	}
	failed := 0
	for _, d := range ds {
		if d.Action != ActionStop {
			t.Fatalf("%+v", d)
		}
		if d.Error != "" {
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d failed stops: %+v", failed, ds)
	}
	ds = e.tick()
	if e.status(a.ID) != provider.StatusExited || e.status(b.ID) != provider.StatusExited {
		t.Fatalf("not both stopped: %+v", ds)
	}
}

// A provider that cannot list pods fails the tick, decides nothing and stops
// nothing; Run goes on to the next tick.
func TestProviderOutage(t *testing.T) {
	e := newEnv(t)
	pod := e.create("sc-outage", &store.Pod{IdleStop: time.Minute})
	e.gpus.set(pod.ID, 0, nil)
	e.clk.Advance(time.Hour)
	e.srv.Inject(runpodtest.Fault{Route: "GET /pods", Kind: runpodtest.ServerError, Times: 3})
	var results []error
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	e.w.OnTick = func(ds []Decision, err error) {
		results = append(results, err)
		if len(results) == 2 {
			cancel()
		}
	}
	e.w.Sleep = func(ctx context.Context, d time.Duration) error { e.clk.Advance(d); return ctx.Err() }
	e.w.Run(ctx, 10*time.Second)
	if len(results) != 2 || results[0] == nil || results[1] != nil {
		t.Fatalf("%v", results)
	}
	if e.status(pod.ID) != provider.StatusExited {
		t.Fatal("not stopped after the outage")
	}
	if !strings.Contains(e.log.String(), "list pods") {
		t.Errorf("outage not logged: %s", e.log.String())
	}
}

// Many pods are probed concurrently (Parallel), with results per pod.
func TestManyPods(t *testing.T) {
	e := newEnv(t)
	e.w.Parallel = 3
	var ids []string
	for i := 0; i < 10; i++ {
		p := e.create(fmt.Sprintf("sc-many-%d", i), &store.Pod{IdleStop: 10 * time.Minute})
		e.gpus.set(p.ID, i%2*50, nil) // odd ones busy
		ids = append(ids, p.ID)
	}
	e.clk.Advance(11 * time.Minute)
	ds := e.tick()
	for i := 0; i < 10; i++ {
		d := find(t, ds, fmt.Sprintf("sc-many-%d", i))
		want := ActionStop
		if i%2 == 1 {
			want = ActionNone
		}
		if d.Action != want || d.PodID != ids[i] {
			t.Errorf("pod %d: %+v", i, d)
		}
	}
}

// staleStore hands out records as they were when it was made, as a Tick that read
// them just before a concurrent `pod rm` would see them.
type staleStore struct {
	store.PodStore
	recs []store.Pod
}

func (s staleStore) ListPods(context.Context, bool) ([]store.Pod, error) { return s.recs, nil }

// A record terminated between the tick's read and its write stays terminated.
func TestConcurrentRemoveNotUndone(t *testing.T) {
	e := newEnv(t)
	pod := e.create("sc-rm", &store.Pod{IdleStop: time.Minute})
	e.gpus.set(pod.ID, 0, nil)
	live, _ := e.st.ListPods(ctxT(t), true)
	rec, _ := e.st.GetPod(ctxT(t), "sc-rm")
	now := e.clk.Now()
	rec.TerminatedAt, rec.LastSeenStatus = &now, provider.StatusTerminated
	e.st.PutPod(ctxT(t), rec)
	e.w.Store = staleStore{PodStore: e.st, recs: live}
	e.clk.Advance(time.Hour)
	if d := find(t, e.tick(), "sc-rm"); d.Action != ActionStop || d.Error != "" {
		t.Fatalf("%+v", d)
	}
	got, _ := e.st.GetPod(ctxT(t), "sc-rm")
	if got.TerminatedAt == nil || got.LastSeenStatus != provider.StatusTerminated {
		t.Fatalf("record resurrected: %+v", got)
	}
}

// Two records naming one pod (the SQLite store forbids it; another store might
// not): the pod is handled once, by the first (newest) record.
func TestDuplicateRecords(t *testing.T) {
	e := newEnv(t)
	id := e.createUntagged("adopted")
	e.gpus.set(id, 0, nil)
	rec := store.Pod{RequestID: "sc-dup", Provider: runpod.Name, ID: id, IdleStop: time.Minute,
		CreatedAt: e.clk.Now(), LastSeenStatus: provider.StatusRunning}
	dup := rec
	dup.RequestID = "sc-dup2"
	e.st.PutPod(ctxT(t), rec)
	e.w.Store = staleStore{PodStore: e.st, recs: []store.Pod{dup, rec}}
	e.clk.Advance(time.Hour)
	ds := e.tick()
	if d := find(t, ds, "sc-dup2"); d.Action != ActionStop {
		t.Fatalf("%+v", ds)
	}
	if d := find(t, ds, "sc-dup"); d.Action != ActionNone || !strings.Contains(d.Reason, "also recorded as sc-dup2") {
		t.Fatalf("%+v", ds)
	}
	if e.stops() != 1 {
		t.Fatalf("%d stops", e.stops())
	}
}

// Ticks from several goroutines are serialised (run with -race), and Run with the
// real timer ticks until cancelled.
func TestConcurrentTicksAndRealSleep(t *testing.T) {
	e := newEnv(t)
	pod := e.create("sc-conc", &store.Pod{IdleStop: time.Hour})
	e.gpus.set(pod.ID, 0, nil)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.w.Tick(ctxT(t)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	n := 0
	e.w.Sleep = nil
	e.w.OnTick = func([]Decision, error) {
		if n++; n == 3 {
			cancel()
		}
	}
	if err := e.w.Run(ctx, 5*time.Millisecond); !errors.Is(err, context.Canceled) || n != 3 {
		t.Fatalf("%v after %d ticks", err, n)
	}
	if e.status(pod.ID) != provider.StatusRunning {
		t.Fatal("stopped")
	}
}

// Records of another provider (an SSH host) are not the Watcher's when ProviderName is set.
func TestOtherProvidersIgnored(t *testing.T) {
	e := newEnv(t)
	e.w.ProviderName = runpod.Name
	if err := e.st.PutPod(ctxT(t), store.Pod{RequestID: "ssh-0123456789", ID: "ssh-0123456789", Provider: "ssh", Name: "box",
		IdleStop: time.Minute, CreatedAt: e.clk.Now().Add(-time.Hour), LastSeenStatus: provider.StatusRunning}); err != nil {
		t.Fatal(err)
	}
	a := e.create("sc-a", &store.Pod{IdleStop: time.Minute})
	e.gpus.set(a.ID, 0, nil)
	e.clk.Advance(2 * time.Minute)
	ds := e.tick()
	if len(ds) != 1 || ds[0].RequestID != "sc-a" || ds[0].Action != ActionStop {
		t.Fatalf("%+v", ds)
	}
}

// The limits a pod carries in its environment (SCOPECTL_IDLE_STOP, SCOPECTL_MAX_HOURS)
// win over the local record's: a pod created elsewhere with a 10m idle stop is stopped
// at 10m though this store says 30m; an unreadable value keeps the record's.
func TestLimitsFromPod(t *testing.T) {
	e := newEnv(t)
	t0 := e.clk.Now()
	mk := func(reqID string, env map[string]string, rec store.Pod) provider.Pod {
		p, err := e.c.Create(ctxT(t), provider.CreateSpec{Name: "scope", GPUType: gpu4090, Image: "daydreamlive/scope:main",
			VolumeGB: 20, Ports: []string{"8000/http", "22/tcp"}, RequestID: reqID, Env: env})
		if err != nil {
			t.Fatal(err)
		}
		pod := e.waitStatus(p.ID, provider.StatusRunning)
		rec.RequestID, rec.Provider, rec.ID, rec.Name, rec.CreatedAt, rec.LastSeenStatus = reqID, runpod.Name, p.ID, p.Name, t0, pod.Status
		if err := e.st.PutPod(ctxT(t), rec); err != nil {
			t.Fatal(err)
		}
		e.gpus.set(pod.ID, 0, nil)
		return pod
	}
	short := mk("sc-podlim", provider.Limits{IdleStop: 10 * time.Minute}.Env(), store.Pod{IdleStop: 30 * time.Minute})
	bad := mk("sc-podlim-bad", map[string]string{provider.EnvIdleStop: "soon"}, store.Pod{IdleStop: 30 * time.Minute})
	capped := mk("sc-podlim-max", map[string]string{provider.EnvIdleStop: "0", provider.EnvMaxHours: "0.25"}, store.Pod{IdleStop: 5 * time.Minute})

	e.clk.Set(t0.Add(9 * time.Minute))
	ds := e.tick()
	if d := find(t, ds, "sc-podlim"); d.Action != ActionNone || !strings.Contains(d.Reason, "of 10m0s") {
		t.Fatalf("%+v", d)
	}
	if d := find(t, ds, "sc-podlim-max"); d.Action != ActionNone || !strings.Contains(d.Reason, "idle stop disabled") {
		t.Fatalf("the pod's idle stop 0 should win over the record's 5m: %+v", d)
	}
	e.clk.Set(t0.Add(10 * time.Minute))
	ds = e.tick()
	if d := find(t, ds, "sc-podlim"); d.Action != ActionStop || !strings.Contains(d.Reason, "idle-stop 10m0s") {
		t.Fatalf("%+v", d)
	}
	if d := find(t, ds, "sc-podlim-bad"); d.Action != ActionNone || !strings.Contains(d.Reason, "of 30m0s") {
		t.Fatalf("an unreadable value on the pod should keep the record's 30m: %+v", d)
	}
	e.clk.Set(t0.Add(15 * time.Minute))
	if d := find(t, e.tick(), "sc-podlim-max"); d.Action != ActionStop || !strings.Contains(d.Reason, "max-hours 0.25") {
		t.Fatalf("%+v", d)
	}
	if e.status(short.ID) != provider.StatusExited || e.status(capped.ID) != provider.StatusExited || e.status(bad.ID) != provider.StatusRunning {
		t.Fatal("wrong pods stopped")
	}
}
