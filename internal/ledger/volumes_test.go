package ledger

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
)

func TestNetworkMonthly(t *testing.T) {
	for gb, want := range map[int]float64{0: 0, 50: 3.5, 1000: 70, 1500: 70 + 25, 4000: 70 + 150} {
		if got := NetworkMonthly(gb); !near(got, want) {
			t.Errorf("%d GB: $%g/month, want $%g", gb, got, want)
		}
	}
}

// TestVolumeLedger: a network volume costs its size at RunPod's rate for as long as it
// is listed, pod or no pod, as its own line and in the days and months; a resize
// splits it; a deleted volume ends when last seen; pods' runs are untouched.
func TestVolumeLedger(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	vols := []Volume{{ID: "v1", Name: "models", SizeGB: 100}, {ID: "v2", Name: "big", SizeGB: 2000}}
	for _, at := range []time.Duration{0, 12 * time.Hour, 24 * time.Hour} {
		if _, err := ObserveVolumes(ctx, s, "runpod", vols, t0.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	// A pod runs meanwhile: its rows and the volumes' stay apart.
	pod := provider.Pod{ID: "p1", Status: provider.StatusRunning, CostPerHr: 1, StartedAt: t0, NetworkVolumeID: "v1"}
	if _, err := Observe(ctx, s, "runpod", []provider.Pod{pod}, nil, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// v1 grows to 300 GB; v2 is deleted.
	notes, err := ObserveVolumes(ctx, s, "runpod", []Volume{{ID: "v1", Name: "models", SizeGB: 300}}, t0.Add(36*time.Hour))
	if err != nil || len(notes) != 2 || !strings.Contains(strings.Join(notes, "\n"), "resized from 100 GB to 300 GB") || !strings.Contains(strings.Join(notes, "\n"), "v2 is gone") {
		t.Fatalf("notes %q %v", notes, err)
	}
	runs, _ := s.Runs(ctx, time.Time{})
	rep := Build(runs, time.Time{}, t0.Add(48*time.Hour), nil)
	v := map[string]Line{}
	for _, l := range rep.Volumes {
		v[l.Key] = l
	}
	// v1: 36 h at 100 GB, then 12 h at 300 GB; v2: 24 h (last seen) at 2000 GB.
	want1 := (36*NetworkMonthly(100) + 12*NetworkMonthly(300)) / hoursPerMonth
	want2 := 24 * NetworkMonthly(2000) / hoursPerMonth
	if len(rep.Volumes) != 2 || !near(v["v1"].Storage, want1) || !near(v["v2"].Storage, want2) || v["v1"].Name != "models" ||
		!v["v1"].Running || v["v2"].Running || !near(v["v1"].Hours, 48) || v["v1"].GPUDollars != 0 {
		t.Fatalf("volumes %+v, want $%.4f and $%.4f", rep.Volumes, want1, want2)
	}
	if len(rep.Pods) != 1 || rep.Pods[0].Key != "p1" || rep.Pods[0].Storage != 0 {
		t.Fatalf("pods %+v", rep.Pods)
	}
	// The sizes now: v1's latest row, v2's last before it went.
	if sz := VolumeSizes(runs); len(sz) != 2 || sz["v1"] != 300 || sz["v2"] != 2000 {
		t.Fatalf("sizes %v", sz)
	}
	var dayStorage float64
	for _, d := range rep.Days {
		dayStorage += d.Storage
	}
	if !near(dayStorage, want1+want2) || !near(rep.Total.Storage, want1+want2) || len(rep.Months) != 1 || !near(rep.Months[0].Storage, want1+want2) {
		t.Fatalf("days %+v total %+v", rep.Days, rep.Total)
	}
	// Since a day in: only what falls after it.
	since := t0.Add(24 * time.Hour)
	if r := Build(runs, since, t0.Add(48*time.Hour), nil); len(r.Volumes) != 1 || !near(r.Volumes[0].Storage, (12*NetworkMonthly(100)+12*NetworkMonthly(300))/hoursPerMonth) {
		t.Fatalf("since: %+v", r.Volumes)
	}
	// The pods' ledger never sees volume rows.
	podRuns, _ := s.OpenRuns(ctx, "runpod")
	for _, r := range podRuns {
		if IsVolume(r) || r.PodID != "p1" {
			t.Fatalf("open pod runs: %+v", podRuns)
		}
	}
}
