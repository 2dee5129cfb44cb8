package ledger

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

func open(t *testing.T) *store.SQLite {
	s, err := store.OpenSQLite(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestLedgerLifecycle(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	t0 := time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC)
	pod := provider.Pod{ID: "p1", Name: "scope-x", Status: provider.StatusRunning, CostPerHr: 1, StartedAt: t0, VolumeGB: 0}
	recs := map[string]store.Pod{"p1": {RequestID: "sc1", Name: "scope"}}
	if _, err := Observe(ctx, s, "runpod", []provider.Pod{pod}, recs, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Price change mid-run: split, one note.
	pod.CostPerHr = 2
	notes, err := Observe(ctx, s, "runpod", []provider.Pod{pod}, recs, t0.Add(2*time.Hour))
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "price changed") {
		t.Fatalf("notes %q, err %v", notes, err)
	}
	// scopectl stops it at 3h: exact end.
	if err := Stopped(ctx, s, "runpod", "p1", t0.Add(3*time.Hour), EndWatch, "idle 30m", 30*time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	// Seen stopped later: the exact end is kept.
	pod.Status = provider.StatusExited
	if _, err := Observe(ctx, s, "runpod", []provider.Pod{pod}, recs, t0.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	runs, _ := s.Runs(ctx, time.Time{})
	if len(runs) != 2 || runs[1].EndSource != EndWatch || !runs[1].EndedAt.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("runs %+v", runs)
	}
	rep := Build(runs, time.Time{}, t0.Add(6*time.Hour), nil)
	// 2h × $1 + 1h × $2 = $4; idle 30 min of the second row at $2 = $1.
	if !near(rep.Total.GPUDollars, 4) || !near(rep.Total.IdleDollars, 1) {
		t.Errorf("total %+v", rep.Total)
	}
	// Split across days: 2h on March 1, 1h on March 2.
	if len(rep.Days) != 2 || !near(rep.Days[0].Hours, 2) || !near(rep.Days[1].Hours, 1) {
		t.Errorf("days %+v", rep.Days)
	}
	if len(rep.Deploys) != 1 || rep.Deploys[0].Key != "scope" {
		t.Errorf("deploys %+v", rep.Deploys)
	}
	// --since cuts.
	if r := Build(runs, t0.Add(150*time.Minute), t0.Add(6*time.Hour), nil); !near(r.Total.GPUDollars, 1) {
		t.Errorf("since: %+v", r.Total)
	}
}

func TestLedgerFaults(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	// Clock skew: RunPod says it started in the future.
	skewed := provider.Pod{ID: "p2", Status: provider.StatusRunning, CostPerHr: 1, StartedAt: now.Add(10 * time.Minute)}
	notes, err := Observe(ctx, s, "runpod", []provider.Pod{skewed}, nil, now)
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "ahead of this machine's clock") {
		t.Fatalf("notes %q err %v", notes, err)
	}
	// Seen again every few seconds (serve's sampler), still ahead: the same run, said once.
	for i := 1; i <= 5; i++ {
		if notes, err := Observe(ctx, s, "runpod", []provider.Pod{skewed}, nil, now.Add(time.Duration(i)*5*time.Second)); err != nil || len(notes) != 0 {
			t.Fatalf("sighting %d: notes %q err %v", i, notes, err)
		}
	}
	if runs, _ := s.Runs(ctx, time.Time{}); len(runs) != 1 || !runs[0].StartedAt.Equal(now) || runs[0].EndedAt != nil {
		t.Fatalf("a skewed pod seen again: %+v", runs)
	}
	// Terminated behind scopectl's back: gone from the list: closed at last seen, noted.
	notes, err = Observe(ctx, s, "runpod", nil, nil, now.Add(time.Hour))
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "is gone") {
		t.Fatalf("notes %q err %v", notes, err)
	}
	runs, _ := s.Runs(ctx, time.Time{})
	if len(runs) != 1 || runs[0].EndSource != EndObserved {
		t.Fatalf("runs %+v", runs)
	}
	// A guard's stop read later, for a run never observed: added, not lost.
	p := &provider.Pod{ID: "p3", StartedAt: now, CostPerHr: 0.5}
	if err := Stopped(ctx, s, "runpod", "p3", now.Add(2*time.Hour), EndGuard, "idle", time.Minute, p); err != nil {
		t.Fatal(err)
	}
	runs, _ = s.Runs(ctx, time.Time{})
	if len(runs) != 2 {
		t.Fatalf("runs %+v", runs)
	}
}

func TestBudgetCheck(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if msg, over := BudgetCheck(8, 10, 1, 3, now); !over || !strings.Contains(msg, "$11.00") {
		t.Errorf("%q %v", msg, over)
	}
	if _, over := BudgetCheck(8, 10, 1, 1, now); over {
		t.Error("within budget refused")
	}
	// No max hours: the rest of the day (12 h).
	if msg, over := BudgetCheck(0, 10, 1, 0, now); !over || !strings.Contains(msg, "rest of the UTC day") {
		t.Errorf("%q %v", msg, over)
	}
	if msg, over := BudgetCheck(100, 0, 1, 1, now); msg != "" || over {
		t.Error("no budget")
	}
}

// A listing of part of a provider's pods (one namespace of a cluster, one deployment)
// leaves the others' open runs alone; a stop read again adds nothing; a start given as
// before the pod's last recorded stop counts from that stop.
func TestObserveInAndStopsReadAgain(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	const a, b = "k8s://lab/studio/scope", "k8s://lab/render/scope"
	up := func(id string, start time.Time) provider.Pod {
		return provider.Pod{ID: id, Name: "scope", Status: provider.StatusRunning, StartedAt: start}
	}
	in := func(ns string) func(string) bool {
		return func(id string) bool { return strings.HasPrefix(id, "k8s://lab/"+ns+"/") }
	}
	if _, err := Observe(ctx, s, "kubernetes", []provider.Pod{up(a, t0), up(b, t0)}, nil, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Namespace studio listed empty: its deployment is gone, render's is not touched.
	notes, err := ObserveIn(ctx, s, "kubernetes", in("studio"), nil, nil, t0.Add(time.Hour))
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], a) {
		t.Fatalf("notes %q err %v", notes, err)
	}
	open, _ := s.OpenRuns(ctx, "kubernetes")
	if len(open) != 1 || open[0].PodID != b {
		t.Fatalf("open runs %+v", open)
	}
	// The guard's stop of b at 2h, read at 3h, and again at 4h: one run, ended at 2h.
	stop := t0.Add(2 * time.Hour)
	for _, at := range []time.Time{t0.Add(3 * time.Hour), t0.Add(4 * time.Hour)} {
		p := provider.Pod{ID: b, Name: "scope", Status: provider.StatusExited, StartedAt: t0}
		if err := Stopped(ctx, s, "kubernetes", b, stop, EndGuard, "idle 30m", 0, &p); err != nil {
			t.Fatal(err)
		}
		if _, err := ObserveIn(ctx, s, "kubernetes", in("render"), []provider.Pod{p}, nil, at); err != nil {
			t.Fatal(err)
		}
	}
	runs, _ := s.Runs(ctx, time.Time{})
	var bs []store.Run
	for _, r := range runs {
		if r.PodID == b {
			bs = append(bs, r)
		}
	}
	if len(bs) != 1 || bs[0].EndSource != EndGuard || !bs[0].EndedAt.Equal(stop) {
		t.Fatalf("runs of %s: %+v", b, bs)
	}
	// Seen running again with the old start (no start time on it): counted from the
	// stop, never overlapping the run before.
	if _, err := ObserveIn(ctx, s, "kubernetes", in("render"), []provider.Pod{up(b, t0)}, nil, t0.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	open, _ = s.OpenRuns(ctx, "kubernetes")
	if len(open) != 1 || !open[0].StartedAt.Equal(stop) {
		t.Fatalf("restarted run %+v", open)
	}
	// The same guard stop read once more: the running run is not ended by it.
	p := up(b, t0)
	if err := Stopped(ctx, s, "kubernetes", b, stop, EndGuard, "idle 30m", 0, &p); err != nil {
		t.Fatal(err)
	}
	if open, _ = s.OpenRuns(ctx, "kubernetes"); len(open) != 1 {
		t.Fatalf("an old stop ended the new run: %+v", open)
	}
	rep := Build(runs, time.Time{}, t0.Add(5*time.Hour), nil)
	if rep.Total.Dollars != 0 {
		t.Errorf("no price, no dollars: %+v", rep.Total)
	}
}
