package watch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

type staticSource struct {
	gpus []gpu.GPU
	err  error
}

func (s staticSource) GPUs(context.Context) ([]gpu.GPU, error) { return s.gpus, s.err }

func TestGPUProbe(t *testing.T) {
	pod := provider.Pod{ID: "p1"}
	src := func(s gpu.Source, err error) func(context.Context, provider.Pod) (gpu.Source, error) {
		return func(_ context.Context, p provider.Pod) (gpu.Source, error) {
			if p.ID != "p1" {
				t.Errorf("source for %q", p.ID)
			}
			return s, err
		}
	}
	two := []gpu.GPU{{Index: 0, UtilizationPct: 0, MemoryUsedMiB: 40000}, {Index: 1, UtilizationPct: 4}}
	for _, c := range []struct {
		name string
		p    GPUProbe
		busy bool
		why  string
		err  string
	}{
		{"second GPU busy, default min 1%", GPUProbe{Source: src(staticSource{gpus: two}, nil)}, true, "GPU 1 at 4% (≥ 1%)", ""},
		{"below MinUtil; memory alone is not activity", GPUProbe{Source: src(staticSource{gpus: two}, nil), MinUtil: 5}, false, "GPU utilisation 4% (< 5%)", ""},
		{"all idle", GPUProbe{Source: src(staticSource{gpus: two[:1]}, nil)}, false, "GPU utilisation 0% (< 1%)", ""},
		{"no GPUs", GPUProbe{Source: src(staticSource{gpus: []gpu.GPU{}}, nil)}, false, "no GPUs reported", ""},
		{"nvidia-smi fails", GPUProbe{Source: src(staticSource{err: errors.New("nvidia-smi: exit status 9")}, nil)}, false, "", "exit status 9"},
		{"no SSH", GPUProbe{Source: src(nil, errors.New("pod has no SSH port yet"))}, false, "", "no SSH port"},
		{"nil source", GPUProbe{Source: src(nil, nil)}, false, "", "no GPU source"},
		{"unconfigured", GPUProbe{}, false, "", "no GPU source configured"},
	} {
		busy, why, err := c.p.Busy(context.Background(), store.Pod{}, pod)
		if busy != c.busy || why != c.why || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: %v %q %v", c.name, busy, why, err)
		}
	}
}

// fakeScope answers Scope's endpoints the way Scope's FastAPI app does.
type fakeScope struct {
	mu       sync.Mutex
	status   string // JSON of /api/v1/pipeline/status, or "" for 502 (RunPod's proxy, Scope not up)
	metrics  string // JSON of /api/v1/session/metrics; "404" for an old Scope; "html" for its UI catch-all
	models   map[string]string
	requests []string
}

func (f *fakeScope) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.URL.RequestURI())
	switch r.URL.Path {
	case "/api/v1/pipeline/status":
		if f.status == "" {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("<html>bad gateway</html>"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(f.status))
	case "/api/v1/session/metrics":
		switch f.metrics {
		case "404":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"detail":"Not Found"}`))
		case "html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte("<!doctype html><div id=root></div>"))
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(f.metrics))
		}
	case "/api/v1/models/status":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(f.models[r.URL.Query().Get("pipeline_id")]))
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestScopeProbe(t *testing.T) {
	f := &fakeScope{models: map[string]string{
		"krea-realtime-video": `{"downloaded":false,"progress":{"is_downloading":true,"percentage":41.5,"current_artifact":"Wan2.1-T2V-14B"}}`,
		"longlive":            `{"downloaded":true,"progress":null}`,
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	pod := provider.Pod{ID: "abc123"}
	base := ScopeProbe{HTTP: srv.Client(), URL: func(p provider.Pod) string {
		if p.ID != "abc123" {
			t.Errorf("URL for %q", p.ID)
		}
		return srv.URL + "/"
	}}
	withPipelines := base
	withPipelines.Pipelines = []string{"longlive", "krea-realtime-video"}
	loaded := `{"status":"loaded","pipeline_id":"longlive","load_params":{},"loaded_lora_adapters":[],"error":null,"loading_stage":null,"produces_video":true}`
	for _, c := range []struct {
		name, status, metrics string
		p                     ScopeProbe
		busy                  bool
		why, err              string
	}{
		{"loading", `{"status":"loading","pipeline_id":"krea-realtime-video","loading_stage":"Loading diffusion model..."}`, `{"sessions":{},"gpu":{}}`, base,
			true, "pipeline loading (krea-realtime-video): Loading diffusion model...", ""},
		{"loaded, no session", loaded, `{"sessions":{},"gpu":{"vram_allocated_mb":30000.5}}`, base, false, "pipeline loaded, no session", ""},
		{"loaded, streaming", loaded, `{"sessions":{"3f2a":{"fps":15.2}},"gpu":{}}`, base, true, "1 active session(s)", ""},
		{"headless session", `{"status":"loaded"}`, `{"sessions":{"headless":{"headless":true}},"gpu":{}}`, base, true, "1 active session(s)", ""},
		{"not loaded", `{"status":"not_loaded","pipeline_id":null}`, `{"sessions":{},"gpu":{}}`, base, false, "pipeline not_loaded, no session", ""},
		{"old Scope: 404", loaded, "404", base, false, "pipeline loaded (this Scope does not report sessions)", ""},
		{"old Scope: UI catch-all", loaded, "html", base, false, "pipeline loaded (this Scope does not report sessions)", ""},
		{"metrics fail", loaded, "500", base, false, "", "GET /api/v1/session/metrics: 500 Internal Server Error"},
		{"Scope not up", "", `{"sessions":{}}`, base, false, "", "GET /api/v1/pipeline/status: 502 Bad Gateway"},
		{"not JSON", `<html>`, `{"sessions":{}}`, base, false, "", "not Scope's JSON"},
		{"no status field", `{}`, `{"sessions":{}}`, base, false, "", "no status"},
		{"downloading", loaded, `{"sessions":{}}`, withPipelines, true, "downloading models for krea-realtime-video", ""},
	} {
		f.mu.Lock()
		f.status, f.metrics, f.requests = c.status, c.metrics, nil
		f.mu.Unlock()
		busy, why, err := c.p.Busy(context.Background(), store.Pod{}, pod)
		if busy != c.busy || why != c.why || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: %v %q %v", c.name, busy, why, err)
		}
		if err != nil && strings.Contains(err.Error(), srv.URL) {
			t.Errorf("%s: error repeats the URL: %v", c.name, err)
		}
	}
	f.mu.Lock()
	got := strings.Join(f.requests, " ")
	f.mu.Unlock()
	if got != "/api/v1/pipeline/status /api/v1/session/metrics /api/v1/models/status?pipeline_id=longlive /api/v1/models/status?pipeline_id=krea-realtime-video" {
		t.Errorf("requests: %s", got)
	}

	// Unreachable, and a context that ends: errors, not hangs.
	dead := ScopeProbe{URL: func(provider.Pod) string { return "http://127.0.0.1:1" }}
	if _, _, err := dead.Busy(context.Background(), store.Pod{}, pod); err == nil {
		t.Error("unreachable Scope: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := base.Busy(ctx, store.Pod{}, pod); err == nil {
		t.Error("cancelled: no error")
	}
	if _, _, err := (ScopeProbe{URL: func(provider.Pod) string { return "" }}).Busy(context.Background(), store.Pod{}, pod); err == nil {
		t.Error("empty URL: no error")
	}
}

func TestScopeProbeNeedsURL(t *testing.T) {
	if _, _, err := (ScopeProbe{}).Busy(context.Background(), store.Pod{}, provider.Pod{ID: "x7k2m9"}); err == nil || !strings.Contains(err.Error(), "no Scope URL") {
		t.Fatalf("no URL: %v", err)
	}
}

// The Scope probe plugs into a Watcher and names itself in reasons.
func TestScopeProbeInWatcher(t *testing.T) {
	e := newEnv(t)
	f := &fakeScope{status: `{"status":"loaded"}`, metrics: `{"sessions":{"s1":{}}}`}
	srv := httptest.NewServer(f)
	defer srv.Close()
	e.w.Probes = []Probe{e.gpus.probe(), ScopeProbe{HTTP: srv.Client(), URL: func(provider.Pod) string { return srv.URL }}}
	pod := e.create("sc-scope", &store.Pod{IdleStop: 0})
	rec, _ := e.st.GetPod(ctxT(t), "sc-scope")
	rec.IdleStop = time.Minute
	e.st.PutPod(ctxT(t), rec)
	e.gpus.set(pod.ID, 0, nil)
	e.clk.Advance(rec.IdleStop * 2)
	if d := find(t, e.tick(), "sc-scope"); d.Action != ActionNone || d.Reason != "busy: scope: 1 active session(s)" {
		t.Fatalf("%+v", d)
	}
	f.mu.Lock()
	f.metrics = `{"sessions":{}}`
	f.mu.Unlock()
	e.clk.Advance(rec.IdleStop)
	if d := find(t, e.tick(), "sc-scope"); d.Action != ActionStop {
		t.Fatalf("%+v", d)
	}
}
