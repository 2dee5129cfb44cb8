package cli_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
)

func TestPodLifecycleCLI(t *testing.T) {
	e := newEnv(t)
	key := "rpa_" + strings.Repeat("K9", 20)
	srv := runpodtest.New(t, runpodtest.Options{APIKey: key})
	t.Setenv("RUNPOD_API_URL", srv.RESTURL())
	t.Setenv("RUNPOD_GRAPHQL_URL", srv.GraphQLURL())
	// Without a key the SSH hosts are still listed (none here) and RunPod is skipped, said so.
	if out, errs, code := e.run("pod", "ls"); code != 0 || !strings.Contains(errs, "RUNPOD_API_KEY is not set") || !strings.Contains(out, "no pods") {
		t.Fatalf("without a key: %d %q %q", code, out, errs)
	}
	if _, errs, code := e.run("pod", "ls", "--provider", "runpod"); code != 2 || !strings.Contains(errs, "RUNPOD_API_KEY") {
		t.Fatalf("--provider runpod without a key: %d %s", code, errs)
	}
	t.Setenv("RUNPOD_API_KEY", key)
	gpus := decode[[]map[string]any](t, e.mustRun("pod", "gpus", "--json"))
	if len(gpus) == 0 {
		t.Fatal("no GPU types")
	}
	// Crash between request and answer: exactly one pod, recorded, found again.
	srv.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.DropAfterApply})
	pod := decode[map[string]any](t, e.mustRun("pod", "create", "--gpu", "NVIDIA GeForce RTX 4090", "--no-guard", "--json"))
	id := pod["id"].(string)
	srv.SetTimes(id, time.Now().Add(-10*time.Hour), time.Now().Add(-2*time.Hour))
	ls := decode[[]map[string]any](t, e.mustRun("pod", "ls", "--json"))
	if len(ls) != 1 || ls[0]["recorded"] != true {
		t.Fatalf("ls after an interrupted create: %v", ls)
	}
	// The ledger: a run from the last start (not the creation) at the pod's rate.
	cost := decode[costJSON](t, e.mustRun("cost", "--json"))
	if len(cost.Pods) != 1 || cost.Pods[0].Key != id || !cost.Pods[0].Running ||
		cost.Pods[0].Hours < 2 || cost.Pods[0].Hours > 2.02 || cost.Pods[0].GPU < 1.38 || cost.Pods[0].GPU > 1.40 ||
		cost.Total.GPU != cost.Pods[0].GPU || len(cost.Deploys) != 1 || len(cost.Days) == 0 || len(cost.Months) == 0 {
		t.Fatalf("cost: %+v", cost)
	}
	// Stopped: the spend stays in the ledger, nothing more accrues.
	e.mustRun("pod", "stop", id)
	if cost := decode[costJSON](t, e.mustRun("cost", "--json")); len(cost.Pods) != 1 || cost.Pods[0].Running || cost.Pods[0].GPU < 1.38 || cost.Pods[0].GPU > 1.40 {
		t.Fatalf("cost of a stopped pod: %+v", cost)
	}
	time.Sleep(20 * time.Millisecond)
	e.mustRun("pod", "start", id, "--no-guard")
	if cost := decode[costJSON](t, e.mustRun("cost", "--json")); len(cost.Pods) != 1 || !cost.Pods[0].Running || cost.Pods[0].Hours > 2.02 {
		t.Fatalf("cost after a restart: %+v", cost)
	}
	if cost := decode[costJSON](t, e.mustRun("cost", "--json", "--since", "1h")); cost.Total.Hours < 0.99 || cost.Total.Hours > 1.01 {
		t.Fatalf("cost --since 1h: %+v", cost)
	}
	if text := e.mustRun("cost"); !strings.Contains(text, id) || !strings.Contains(text, "TOTAL") {
		t.Fatalf("cost text: %s", text)
	}
	// A network volume: billed while it exists, its own line (the sums are the ledger's tests).
	srv.SetNetworkVolumes([]runpodtest.NetworkVolume{{ID: "nv7models", Name: "models", SizeGB: 100, DataCenterID: "EU-RO-1"}})
	e.mustRun("pod", "ls", "--json")
	if cost := decode[costJSON](t, e.mustRun("cost", "--json")); len(cost.Volumes) != 1 || cost.Volumes[0].Key != "nv7models" || cost.Volumes[0].Name != "models" || !cost.Volumes[0].Running {
		t.Fatalf("cost with a network volume: %+v", cost.Volumes)
	}
	if text := e.mustRun("cost"); !strings.Contains(text, "VOLUME") || !strings.Contains(text, "nv7models (models)") {
		t.Fatalf("cost text with a network volume: %s", text)
	}
	// A budget: this pod's rate for 24 h passes $1/day: a warning, and refused with --strict.
	if _, errs, code := e.run("pod", "create", "--gpu", "NVIDIA GeForce RTX 4090", "--budget", "$1/day", "--strict", "--max-hours", "24"); code != 3 || !strings.Contains(errs, "budget $1.00/day") {
		t.Fatalf("--strict over budget: %d %s", code, errs)
	}
	if n := srv.Creates(); n != 1 {
		t.Fatalf("a refused create made a pod: %d", n)
	}
	if _, _, code := e.run("pod", "rm", id); code != 2 {
		t.Fatal("rm without --yes")
	}
	e.mustRun("pod", "rm", id, "--yes")
	if _, _, code := e.run("pod", "get", id); code != 4 {
		t.Fatalf("get after rm: exit %d", code)
	}
	all := e.mustRun("pod", "ls", "--json")
	if strings.Contains(all, key) {
		t.Fatal("key in output")
	}
	// Wrong key: one-line error without the key.
	t.Setenv("RUNPOD_API_KEY", "rpa_"+strings.Repeat("ZZ", 20))
	if _, errs, code := e.run("pod", "ls"); code == 0 || strings.Contains(errs, "ZZZZ") || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
		t.Fatalf("%d %q", code, errs)
	}
}

func TestPodWatchStopsPastMaxHours(t *testing.T) {
	e := newEnv(t)
	fakeRunPod(t, "rpa_"+strings.Repeat("W7", 20))
	pod := decode[map[string]any](t, e.mustRun("pod", "create", "--gpu", "NVIDIA GeForce RTX 4090", "--max-hours", "0.0002", "--no-guard", "--json"))
	id := pod["id"].(string)
	deadline := time.Now().Add(20 * time.Second)
	for {
		time.Sleep(300 * time.Millisecond)
		ds := decode[[]map[string]any](t, e.mustRun("pod", "watch", "--once", "--no-ssh", "--json"))
		if len(ds) == 1 && ds[0]["action"] == "stop" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not stopped: %v", ds)
		}
	}
	got := decode[map[string]any](t, e.mustRun("pod", "get", id, "--json"))
	if got["status"] != "EXITED" {
		t.Fatalf("status %v", got["status"])
	}
}

type costLine struct {
	Key     string  `json:"key"`
	Name    string  `json:"name"`
	Hours   float64 `json:"hours"`
	GPU     float64 `json:"gpu_dollars"`
	Running bool    `json:"running"`
}

type costJSON struct {
	Pods    []costLine `json:"pods"`
	Deploys []costLine `json:"deploys"`
	Volumes []costLine `json:"volumes"`
	Days    []costLine `json:"days"`
	Months  []costLine `json:"months"`
	Total   costLine   `json:"total"`
}

// pod watch reads Scope through the RunPod proxy the client is configured with
// (SCOPECTL_RUNPOD_PROXY_URL): a pipeline loading there keeps an idle pod running; once
// it is loaded and nobody uses it, the pod is stopped.
func TestPodWatchScopeThroughProxy(t *testing.T) {
	e := newEnv(t)
	fakeRunPod(t, "rpa_"+strings.Repeat("P3", 20))
	var mu sync.Mutex
	var paths []string
	status := "loading"
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		paths = append(paths, r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/api/v1/pipeline/status"):
			fmt.Fprintf(w, `{"status": %q, "pipeline_id": "longlive"}`, status)
		case strings.HasSuffix(r.URL.Path, "/api/v1/session/metrics"):
			fmt.Fprint(w, `{"sessions": {}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(proxy.Close)
	t.Setenv("SCOPECTL_RUNPOD_PROXY_URL", proxy.URL+"/proxy/{pod}-{port}")
	pod := decode[map[string]any](t, e.mustRun("pod", "create", "--gpu", "NVIDIA GeForce RTX 4090", "--idle-stop", "1s", "--no-guard", "--json"))
	id := pod["id"].(string)
	for i := 0; decode[map[string]any](t, e.mustRun("pod", "get", id, "--json"))["status"] != "RUNNING"; i++ {
		if i > 100 {
			t.Fatal("pod never ran")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1100 * time.Millisecond) // idle past --idle-stop, were it not for Scope
	ds := decode[[]map[string]any](t, e.mustRun("pod", "watch", "--once", "--no-ssh", "--json"))
	if len(ds) != 1 || ds[0]["action"] == "stop" || !strings.Contains(fmt.Sprint(ds[0]["reason"]), "pipeline loading") {
		t.Fatalf("loading pipeline: %v", ds)
	}
	mu.Lock()
	if len(paths) == 0 || paths[0] != "/proxy/"+id+"-8000/api/v1/pipeline/status" {
		t.Fatalf("proxy paths %v", paths)
	}
	status = "loaded"
	mu.Unlock()
	ds = decode[[]map[string]any](t, e.mustRun("pod", "watch", "--once", "--no-ssh", "--json"))
	if len(ds) != 1 || ds[0]["action"] != "stop" {
		t.Fatalf("idle pod: %v", ds)
	}
}

// fakeRunPod starts the fake RunPod API and points scopectl at it with key.
func fakeRunPod(t *testing.T, key string) *runpodtest.Server {
	t.Helper()
	srv := runpodtest.New(t, runpodtest.Options{APIKey: key})
	t.Setenv("RUNPOD_API_URL", srv.RESTURL())
	t.Setenv("RUNPOD_GRAPHQL_URL", srv.GraphQLURL())
	t.Setenv("RUNPOD_API_KEY", key)
	return srv
}
