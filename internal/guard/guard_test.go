package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/watch"
)

// fakeTarget is a Stopper and Runner whose API can be down.
type fakeTarget struct {
	mu      sync.Mutex
	running bool
	seeErr  error // Running fails
	stopErr error // Stop fails
	asked   int   // stops asked for
}

func (f *fakeTarget) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	if f.stopErr != nil {
		return f.stopErr
	}
	f.running = false
	return nil
}
func (f *fakeTarget) String() string { return "fake target" }
func (f *fakeTarget) Running(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running, f.seeErr
}

// clock is a Now that tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) add(d time.Duration)     { c.t = c.t.Add(d) }
func idleProbe(busy *bool) []watch.Probe { return []watch.Probe{busyProbe{busy}} }

type busyProbe struct{ busy *bool }

func (b busyProbe) Busy(context.Context, store.Pod, provider.Pod) (bool, string, error) {
	return *b.busy, "session", nil
}

func newGuard(t *testing.T, f *fakeTarget, c *clock, busy *bool, lines *[]string) *Guard {
	return &Guard{Target: "t1", Limits: provider.Limits{IdleStop: time.Minute}, Stopper: f, Dir: t.TempDir(),
		Probes: idleProbe(busy), Every: 10 * time.Second, MaxStopBackoff: 80 * time.Second, Now: c.now, Started: c.t,
		Log: func(format string, args ...any) { *lines = append(*lines, fmt.Sprintf(format, args...)) }}
}

// TestStopBackoff: a guard that loses the API asks again with a growing wait (never
// more often than every Every, never less often than MaxStopBackoff), stops once the
// API is back, and a pod that became busy meanwhile is not stopped.
func TestStopBackoff(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f := &fakeTarget{running: true, stopErr: errors.New("POST /pods/t1/stop: connection reset")}
	busy := false
	var lines []string
	g := newGuard(t, f, c, &busy, &lines)
	ctx := context.Background()
	c.add(61 * time.Second)
	if v := g.Check(ctx); !strings.Contains(v, "stop failed") || f.asked != 1 {
		t.Fatalf("first stop: %q, asked %d", v, f.asked)
	}
	// Checks every 10 s for 10 minutes: far fewer asks than checks, gaps growing to the cap.
	var at []time.Time
	last := f.asked
	for range 60 {
		c.add(10 * time.Second)
		g.Check(ctx)
		if f.asked != last {
			at, last = append(at, c.t), f.asked
		}
	}
	if f.asked < 6 || f.asked > 20 {
		t.Fatalf("asked %d times in 10 minutes of checks every 10 s", f.asked)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 10*time.Second || gap > 90*time.Second {
			t.Errorf("gap %d between stops: %s", i, gap)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), "trying again in") {
		t.Errorf("no backoff line: %q", lines)
	}
	// Busy again while the API is down: nothing is asked for while it is busy.
	busy = true
	n := f.asked
	for range 20 {
		c.add(10 * time.Second)
		g.Check(ctx)
	}
	if f.asked != n {
		t.Fatalf("stops asked for a busy pod: %d", f.asked-n)
	}
	// Idle again, API back: stopped after the idle limit and the backoff.
	busy, f.stopErr = false, nil
	for i := 0; f.running && i < 40; i++ {
		c.add(10 * time.Second)
		g.Check(ctx)
	}
	if f.running {
		t.Fatal("not stopped once the API was back")
	}
}

// TestRunnerWaits: a container that is not there yet, or stopped by someone else, is
// waited for (no stop asked); one that cannot be seen is not stopped; when it runs,
// its limits count from then and the labels it carries replace the guard's.
func TestRunnerWaits(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f := &fakeTarget{running: false}
	busy := false
	var lines []string
	g := newGuard(t, f, c, &busy, &lines)
	labels := provider.Limits{IdleStop: 2 * time.Minute, FromPod: true}
	haveLabels := false
	g.Refresh = func(context.Context) (provider.Limits, bool, error) { return labels, haveLabels, nil }
	ctx := context.Background()
	for range 20 {
		c.add(time.Minute)
		if v := g.Check(ctx); !strings.Contains(v, "not running") {
			t.Fatalf("no container: %q", v)
		}
	}
	f.seeErr = errors.New("docker: cannot connect to the Docker daemon")
	c.add(time.Hour)
	if v := g.Check(ctx); !strings.Contains(v, "cannot see") || f.asked != 0 {
		t.Fatalf("docker down: %q, asked %d", v, f.asked)
	}
	// Deployed now, with labels: idle 2m counts from now.
	f.seeErr, f.running, haveLabels = nil, true, true
	g.Check(ctx)
	c.add(90 * time.Second)
	if v := g.Check(ctx); f.asked != 0 || !strings.Contains(v, "idle 1m30s of 2m0s") {
		t.Fatalf("90 s after it ran: %q, asked %d", v, f.asked)
	}
	c.add(31 * time.Second)
	if v := g.Check(ctx); f.asked != 1 || f.running || !strings.Contains(v, "stopped") {
		t.Fatalf("past its label's limit: %q, asked %d", v, f.asked)
	}
	if g.Limits.IdleStop != 2*time.Minute {
		t.Fatalf("limits %v", g.Limits)
	}
}

// TestLimitLabels: the labels deploy sets read back as the same limits; labels that
// are not numbers are a problem, never a limit.
func TestLimitLabels(t *testing.T) {
	for _, l := range []provider.Limits{{IdleStop: 30 * time.Minute}, {IdleStop: 0, MaxHours: 4.5}, {IdleStop: 90 * time.Second, MaxHours: 0.25, StopOnJobEnd: true}} {
		got, ok := provider.LimitsFromEnv(provider.LimitsEnvFromLabels(l.Labels()))
		l.FromPod = true
		if !ok || got != l {
			t.Errorf("%+v → %v → %+v", l, l.Labels(), got)
		}
	}
	if _, ok := provider.LimitsFromEnv(provider.LimitsEnvFromLabels(map[string]string{"scopectl.managed": "true"})); ok {
		t.Error("a container without limit labels has limits")
	}
	got, _ := provider.LimitsFromEnv(provider.LimitsEnvFromLabels(map[string]string{provider.LabelIdleStop: "soon"}))
	if got.IdleStop != 0 || !strings.Contains(got.Problem, "soon") {
		t.Errorf("bad label: %+v", got)
	}
}

// TestStartScriptQuoting: the start script quotes what it is given.
func TestStartScriptQuoting(t *testing.T) {
	s := StartScript("/w/.scopectl/scopectl", "/w/it's/guard", "/w/log", []string{"guard", "--scope-url", "http://x/$(reboot)"})
	if !strings.Contains(s, `'/w/it'\''s/guard'`) || !strings.Contains(s, `'http://x/$(reboot)'`) {
		t.Fatalf("%s", s)
	}
}
