package server_test

import (
	"context"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/server"
	"github.com/daydreamlive/scopectl/internal/store"
)

// metricValue is the value of the one series of /metrics that starts with series.
func metricValue(t *testing.T, body, series string) (float64, bool) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v, true
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-3 }

// TestAPICost: GET /api/v1/cost is `scopectl cost --json` (ledger.Build over the same
// ledger, RunPod's listed pods as live) with each network volume's size and monthly
// rate; /metrics exports the same dollars per volume; the sampler keeps the volume
// rows up to date (a volume deleted on RunPod stops accruing and loses its rate); a
// stop from the page is an exact end in the ledger.
func TestAPICost(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	ls := h.lib.Store.(store.LedgerStore)

	var rep server.CostReport
	code, body, _ := h.do("GET", "/api/v1/cost", "", nil)
	decodeJSON(t, body, &rep)
	runs, err := ls.Runs(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	want := ledger.Build(runs, time.Time{}, time.Now(), map[string]bool{h.podID: true})
	vols := map[string]server.VolumeCost{}
	for _, v := range rep.Volumes {
		vols[v.Key] = v
	}
	models, big := vols["nv7models"], vols["nvbigdata"]
	// nv7models: 240 h at 100 GB ($7/month); nvbigdata: met now, 1500 GB ($70 + $25)
	if code != 200 || len(rep.Volumes) != 2 || models.Name != "models" || models.SizeGB != 100 || !near(models.Monthly, 7) || !models.Running ||
		math.Abs(models.Storage-7*240.0/730) > 0.01 || big.Name != "datasets" || big.SizeGB != 1500 || !near(big.Monthly, 95) || !big.Running || big.Storage > 0.01 {
		t.Fatalf("cost volumes: %d %s", code, body)
	}
	if len(want.Volumes) != 2 || want.Volumes[0].Key != "nv7models" || !near(want.Volumes[0].Storage, models.Storage) || !near(want.Volumes[1].Storage, big.Storage) || !near(want.Total.Dollars, rep.Total.Dollars) ||
		!near(want.Total.GPUDollars, rep.Total.GPUDollars) || !near(want.Total.Storage, rep.Total.Storage) || len(rep.Pods) != len(want.Pods) ||
		len(rep.Days) != len(want.Days) || len(rep.Months) != len(want.Months) {
		t.Fatalf("cost: %s\nwant (ledger.Build): %+v", body, want)
	}
	// the pod: its run three days ago, its volume while stopped since, its run now
	if len(rep.Pods) != 1 || rep.Pods[0].Key != h.podID || !rep.Pods[0].Running || rep.Pods[0].GPUDollars < 2*0.69-0.01 || rep.Pods[0].Storage < 0.9 {
		t.Fatalf("cost pods: %+v", rep.Pods)
	}
	// the field names of scopectl cost --json, the volumes' size and rate beside them
	for _, f := range []string{`"since":`, `"until":`, `"pods":[{"key":"`, `"deploys":`, `"jobs":`, `"days":`, `"months":`, `"total":{"key":"total"`,
		`"estimated_ends":`, `"gpu_dollars":`, `"idle_dollars":`, `"storage_dollars":`, `"size_gb":100`, `"dollars_per_month":7`, `"name":"models"`} {
		if !strings.Contains(body, f) {
			t.Errorf("cost JSON lacks %s", f)
		}
	}

	// /metrics: the same dollars per volume, its rate and size; the ledger's total by kind
	_, metrics, _ := h.do("GET", "/metrics", "", nil)
	check := func(series string, want, tol float64) {
		t.Helper()
		got, ok := metricValue(t, metrics, series)
		if !ok || math.Abs(got-want) > tol {
			t.Errorf("%s = %g (present %v), want %g", series, got, ok, want)
		}
	}
	check(`scopectl_volume_cost_dollars_total{volume="nv7models"}`, models.Storage, 1e-3)
	check(`scopectl_volume_price_dollars_per_month{volume="nv7models"}`, 7, 1e-9)
	check(`scopectl_volume_price_dollars_per_month{volume="nvbigdata"}`, 95, 1e-9)
	check(`scopectl_volume_size_bytes{volume="nvbigdata"}`, 1.5e12, 1)
	check(`scopectl_cost_dollars_total{kind="gpu"}`, rep.Total.GPUDollars, 1e-3)
	check(`scopectl_cost_dollars_total{kind="storage"}`, rep.Total.Storage, 1e-3)
	if !strings.Contains(metrics, "# TYPE scopectl_volume_cost_dollars_total counter") || !strings.Contains(metrics, "# TYPE scopectl_volume_price_dollars_per_month gauge") {
		t.Error("metric types")
	}

	// nvbigdata is deleted on RunPod: the next sample ends its row; it keeps its line
	// and its dollars, and has no rate any more
	h.rp.SetNetworkVolumes([]runpodtest.NetworkVolume{{ID: "nv7models", Name: "models", SizeGB: 100, DataCenterID: "EU-RO-1"}})
	h.srv.Poll(ctx)
	_, body, _ = h.do("GET", "/api/v1/cost", "", nil)
	rep = server.CostReport{}
	decodeJSON(t, body, &rep)
	for _, v := range rep.Volumes {
		if v.Key == "nvbigdata" && v.Running || v.Key == "nv7models" && !v.Running {
			t.Fatalf("after a deletion: %s", body)
		}
	}
	_, metrics, _ = h.do("GET", "/metrics", "", nil)
	if _, ok := metricValue(t, metrics, `scopectl_volume_price_dollars_per_month{volume="nvbigdata"}`); ok {
		t.Error("a deleted volume still has a rate")
	}
	if _, ok := metricValue(t, metrics, `scopectl_volume_cost_dollars_total{volume="nvbigdata"}`); !ok {
		t.Error("a deleted volume's dollars are gone from /metrics")
	}

	// ?since: only what falls after it; bad input is one JSON line
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	_, body, _ = h.do("GET", "/api/v1/cost?since="+since, "", nil)
	rep = server.CostReport{}
	decodeJSON(t, body, &rep)
	for _, v := range rep.Volumes {
		if v.Hours > 1.01 {
			t.Fatalf("since an hour ago: %s", body)
		}
	}
	if code, body, _ := h.do("GET", "/api/v1/cost?since=7d", "", nil); code != 400 || !strings.Contains(body, `"error":"since \"7d\": want an RFC 3339 time`) {
		t.Errorf("bad since: %d %s", code, body)
	}

	// a stop from the page: the pod's run ends exactly then, by scopectl
	if code, body, _ := h.do("POST", "/api/v1/pods/"+h.podID+"/stop", `{}`, auth()); code != 200 {
		t.Fatalf("stop: %d %s", code, body)
	}
	runs, _ = ls.Runs(ctx, time.Now().Add(-time.Minute))
	stopped := false
	for _, r := range runs {
		if r.PodID == h.podID && r.EndedAt != nil && r.EndSource == ledger.EndScopectl && time.Since(*r.EndedAt) < time.Minute {
			stopped = true
		}
	}
	if !stopped {
		t.Fatalf("the stop is not in the ledger: %+v", runs)
	}
	_, body, _ = h.do("GET", "/api/v1/cost", "", nil)
	rep = server.CostReport{}
	decodeJSON(t, body, &rep)
	if len(rep.Pods) != 1 || rep.Pods[0].Running {
		t.Fatalf("cost after the stop: %s", body)
	}
}
