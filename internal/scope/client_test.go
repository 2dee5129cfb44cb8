package scope

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeScope answers like Scope (docs in /work/shared/reference/scope.md and
// src/scope/server/app.py): health, asynchronous pipeline load, status with no
// error text (an error falls back to not_loaded once read), and a log tail
// with byte offsets.
type fakeScope struct {
	mu          sync.Mutex
	status      string
	pipelineID  *string
	adapters    []map[string]any
	stage       *string
	logs        []string
	delay       time.Duration
	fail        bool // the next load fails
	unhealthy   int  // answer 503 to this many /health calls first
	lastLoad    map[string]any
	statusReads int
}

func (f *fakeScope) log(l string) { f.logs = append(f.logs, l) }

func (f *fakeScope) size() int64 {
	n := 0
	for _, l := range f.logs {
		n += len(l) + 1
	}
	return int64(n)
}

func (f *fakeScope) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	js := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/health":
		if f.unhealthy > 0 {
			f.unhealthy--
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		js(200, map[string]any{"status": "healthy", "timestamp": "2026-04-30T10:00:00.123456",
			"server_start_time": float64(time.Now().Add(-90*time.Second).UnixNano()) / 1e9,
			"version":           "0.1.9", "git_commit": "abc1234", "extra": []int{1}})
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/pipeline/status":
		f.statusReads++
		js(200, map[string]any{"status": f.status, "pipeline_id": f.pipelineID, "load_params": nil,
			"loaded_lora_adapters": f.adapters, "loading_stage": f.stage, "error": nil})
		if f.status == StatusError {
			f.status = StatusNotLoaded // Scope clears the error once it has been read
			f.pipelineID = nil
		}
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/pipeline/load":
		var req map[string]any
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			js(422, map[string]any{"detail": "bad json"})
			return
		}
		ids, _ := req["pipeline_ids"].([]any)
		if len(ids) == 0 {
			js(400, map[string]any{"detail": "Either 'pipelines' or 'pipeline_ids' must be provided"})
			return
		}
		f.lastLoad = req
		id := ids[0].(string)
		lp, _ := req["load_params"].(map[string]any)
		f.status, f.pipelineID, f.adapters = StatusLoading, &id, nil
		stage := "Loading diffusion model"
		f.stage = &stage
		f.log("2026-04-30 10:00:01,000 - scope.server.pipeline_manager - INFO - Loading pipeline " + id)
		fail, delay := f.fail, f.delay
		go func() {
			time.Sleep(delay)
			f.mu.Lock()
			defer f.mu.Unlock()
			f.stage = nil
			if fail {
				f.status = StatusError
				f.log("2026-04-30 10:00:02,000 - scope.server.pipeline_manager - ERROR - Failed to load pipeline " + id + ": LoRA loading failed")
				f.log("Traceback (most recent call last):")
				f.log(`  File "/app/src/scope/core/pipelines/wan2_1/lora/utils.py", line 88, in load_lora`)
				f.log("    raise FileNotFoundError(path)")
				f.log("FileNotFoundError: /workspace/models/lora/missing.safetensors")
				return
			}
			f.status = StatusLoaded
			if lp != nil {
				if ls, ok := lp["loras"].([]any); ok {
					for _, l := range ls {
						m := l.(map[string]any)
						f.adapters = append(f.adapters, map[string]any{"path": m["path"], "scale": m["scale"]})
					}
				}
			}
			f.log("2026-04-30 10:00:02,000 - scope.server.pipeline_manager - INFO - Pipeline " + id + " loaded")
		}()
		js(200, map[string]any{"message": "Pipeline loading initiated successfully"})
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/logs/tail":
		n := 200
		if s := r.URL.Query().Get("lines"); s != "" {
			n, _ = strconv.Atoi(s)
		}
		if n < 1 || n > 1000 {
			js(422, map[string]any{"detail": "lines out of range"})
			return
		}
		since, _ := strconv.ParseInt(r.URL.Query().Get("since_offset"), 10, 64)
		size := f.size()
		var out []string
		if since > 0 {
			if since < size {
				var off int64
				for _, l := range f.logs {
					if off >= since {
						out = append(out, l)
					}
					off += int64(len(l) + 1)
				}
			}
		} else {
			out = f.logs
		}
		if len(out) > n {
			out = out[len(out)-n:]
		}
		if out == nil {
			out = []string{}
		}
		js(200, map[string]any{"lines": out, "offset": size})
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/loras":
		js(200, map[string]any{"lora_files": []map[string]any{
			{"name": "a", "path": "/workspace/models/lora/a.safetensors", "size_mb": 1.5, "folder": nil,
				"sha256": "ABCDEF", "provenance": map[string]any{"source": "huggingface", "repo_id": "x/y", "hf_filename": "a.safetensors", "model_id": nil, "version_id": nil, "url": nil}, "read_only": false},
			{"name": "b", "path": "/workspace/models/lora/sub/b.safetensors", "size_mb": 0.01, "folder": "sub",
				"sha256": nil, "provenance": nil, "read_only": true},
		}})
	case r.Method == http.MethodGet:
		// Scope's catch-all serves its web UI.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><html></html>")
	default:
		js(405, map[string]any{"detail": "Method Not Allowed"})
	}
}

func newFake(t *testing.T) (*fakeScope, *Client) {
	f := &fakeScope{status: StatusNotLoaded, delay: 600 * time.Millisecond}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, &Client{Base: srv.URL + "/"}
}

func TestHealth(t *testing.T) {
	f, c := newFake(t)
	f.unhealthy = 2
	if _, err := c.Health(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Health while starting: %v", err)
	}
	h, err := c.WaitHealthy(context.Background(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h.Status != "healthy" || h.Version != "0.1.9" || h.GitCommit != "abc1234" || h.UptimeS < 80 || h.UptimeS > 200 {
		t.Fatalf("%+v", h)
	}
	b, _ := json.Marshal(h)
	if strings.Contains(string(b), "extra") || strings.Contains(string(b), "timestamp") {
		t.Fatalf("unknown fields kept: %s", b)
	}
}

func TestWaitHealthyBounded(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens
	c := &Client{Base: srv.URL}
	start := time.Now()
	_, err := c.WaitHealthy(context.Background(), 700*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not healthy") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("WaitHealthy took %s", d)
	}
}

func TestLoadAndWait(t *testing.T) {
	f, c := newFake(t)
	ctx := context.Background()
	st, err := c.PipelineStatus(ctx)
	if err != nil || st.Status != StatusNotLoaded || len(st.LoadedLoRAs) != 0 {
		t.Fatalf("%+v %v", st, err)
	}
	loras := []LoRALoad{{Path: "/workspace/models/lora/a.safetensors", Scale: 0.8}}
	if err := c.LoadPipeline(ctx, "krea-realtime-video", loras, map[string]any{"height": 320, "width": 576}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	got, _ := json.Marshal(f.lastLoad)
	f.mu.Unlock()
	want := `{"load_params":{"height":320,"lora_merge_mode":"permanent_merge","loras":[{"path":"/workspace/models/lora/a.safetensors","scale":0.8}],"width":576},"pipeline_ids":["krea-realtime-video"]}`
	if string(got) != want {
		t.Fatalf("load body\n got %s\nwant %s", got, want)
	}
	st, err = c.PipelineStatus(ctx)
	if err != nil || st.Status != StatusLoading || st.LoadingStage == "" || st.PipelineID != "krea-realtime-video" {
		t.Fatalf("%+v %v", st, err)
	}
	st, err = c.WaitLoaded(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusLoaded || st.PipelineID != "krea-realtime-video" || len(st.LoadedLoRAs) != 1 ||
		st.LoadedLoRAs[0] != (LoadedLoRA{Path: loras[0].Path, Scale: 0.8}) {
		t.Fatalf("%+v", st)
	}
	// A caller's merge mode wins.
	if err := c.LoadPipeline(ctx, "longlive", nil, map[string]any{"lora_merge_mode": "runtime_peft"}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	lp := f.lastLoad["load_params"].(map[string]any)
	f.mu.Unlock()
	if lp["lora_merge_mode"] != "runtime_peft" || lp["loras"] != nil {
		t.Fatalf("%v", lp)
	}
	if _, err := c.WaitLoaded(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFails(t *testing.T) {
	f, c := newFake(t)
	f.fail = true
	ctx := context.Background()
	if err := c.LoadPipeline(ctx, "krea-realtime-video", []LoRALoad{{Path: "/workspace/models/lora/missing.safetensors", Scale: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.WaitLoaded(ctx, 10*time.Second)
	if err == nil || !errors.Is(err, ErrLoadFailed) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, "FileNotFoundError: /workspace/models/lora/missing.safetensors") ||
		!strings.Contains(msg, "LoRA loading failed") || strings.Contains(msg, "Traceback") {
		t.Fatalf("error: %q", msg)
	}
	// The error status falls back to not_loaded once read; a second wait
	// that only sees not_loaded after loading also fails with the log reason.
	f.mu.Lock()
	f.status, f.fail, f.delay = StatusNotLoaded, false, time.Hour
	f.mu.Unlock()
	if err := c.LoadPipeline(ctx, "krea-realtime-video", nil, nil); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.status = StatusLoading
	f.mu.Unlock()
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.mu.Lock()
		f.status = StatusNotLoaded // as if the error had been read by someone else
		f.mu.Unlock()
	}()
	_, err = c.WaitLoaded(ctx, 10*time.Second)
	if err == nil || !errors.Is(err, ErrLoadFailed) || !strings.Contains(err.Error(), "not_loaded") {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitLoadedTimeout(t *testing.T) {
	f, c := newFake(t)
	f.delay = time.Hour
	if err := c.LoadPipeline(context.Background(), "longlive", nil, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.WaitLoaded(context.Background(), 600*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "status loading: Loading diffusion model") {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("not bounded")
	}
}

func TestLoadRejected(t *testing.T) {
	_, c := newFake(t)
	if err := c.LoadPipeline(context.Background(), "", nil, nil); err == nil {
		t.Fatal("empty id accepted")
	}
	err := c.do(context.Background(), http.MethodPost, "/api/v1/pipeline/load", map[string]any{"pipeline_id": "x"}, nil)
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "pipeline_ids") {
		t.Fatalf("err = %v", err)
	}
}

func TestLogs(t *testing.T) {
	f, c := newFake(t)
	ctx := context.Background()
	lines, err := c.LogsTail(ctx, 50)
	if err != nil || len(lines) != 0 || lines == nil {
		t.Fatalf("%q %v", lines, err)
	}
	f.mu.Lock()
	for i := range 5 {
		f.log(fmt.Sprintf("line %d", i))
	}
	f.mu.Unlock()
	lines, err = c.LogsTail(ctx, 2)
	if err != nil || strings.Join(lines, ",") != "line 3,line 4" {
		t.Fatalf("%q %v", lines, err)
	}
	tail, err := c.LogsSince(ctx, 100, 0)
	if err != nil || !tail.HasOffset || tail.Offset != f.size() {
		t.Fatalf("%+v %v", tail, err)
	}
	f.mu.Lock()
	f.log("line 5")
	f.mu.Unlock()
	t2, err := c.LogsSince(ctx, 100, tail.Offset)
	if err != nil || strings.Join(t2.Lines, ",") != "line 5" || t2.Offset != tail.Offset+7 {
		t.Fatalf("%+v %v", t2, err)
	}
	t3, err := c.LogsSince(ctx, 100, t2.Offset)
	if err != nil || len(t3.Lines) != 0 || t3.Offset != t2.Offset {
		t.Fatalf("%+v %v", t3, err)
	}
	if _, err := c.LogsTail(ctx, 5000); err != nil { // clamped to 1000
		t.Fatal(err)
	}
}

func TestLoRAs(t *testing.T) {
	_, c := newFake(t)
	ls, err := c.LoRAs(context.Background())
	if err != nil || len(ls) != 2 {
		t.Fatalf("%+v %v", ls, err)
	}
	if ls[0].Name != "a" || ls[0].SHA256 != "abcdef" || ls[0].Source != SourceHuggingFace || ls[0].Prov == nil || ls[0].SizeMB != 1.5 {
		t.Fatalf("%+v", ls[0])
	}
	if ls[1].Folder != "sub" || ls[1].SHA256 != "" || ls[1].Prov != nil || !ls[1].ReadOnly {
		t.Fatalf("%+v", ls[1])
	}
}

func TestNotScope(t *testing.T) {
	_, c := newFake(t)
	var v any
	err := c.do(context.Background(), http.MethodGet, "/api/v1/nothing", nil, &v)
	if !IsNotFound(err) {
		t.Fatalf("web page: %v", err)
	}
	c.Base = ""
	if _, err := c.Health(context.Background()); err == nil {
		t.Fatal("no base accepted")
	}
}

func TestFailureReason(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"INFO starting", "INFO done"}, "INFO done"},
		{[]string{"x - ERROR - Failed to load", "Traceback (most recent call last):", `  File "a.py", line 1`, "    raise X", "LoRAIncompatibleError: shape mismatch 5120 vs 1536"},
			"x - ERROR - Failed to load | LoRAIncompatibleError: shape mismatch 5120 vs 1536"},
	} {
		if got := FailureReason(tc.in); got != tc.want {
			t.Errorf("FailureReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
