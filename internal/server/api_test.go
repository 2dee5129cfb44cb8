package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

func decodeJSON(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("not JSON (%v): %s", err, body)
	}
}

func TestAPI(t *testing.T) {
	h := newHarness(t, true)

	// LoRAs, paged by name
	code, body, hd := h.do("GET", "/api/v1/loras?limit=2", "", nil)
	if code != 200 || !strings.HasPrefix(hd.Get("Content-Type"), "application/json") {
		t.Fatalf("loras: %d %s", code, body)
	}
	var page struct {
		Items []struct {
			Name    string `json:"name"`
			SHA256  string `json:"sha256"`
			Base    string `json:"base"`
			Family  string `json:"family"`
			Rank    int    `json:"rank"`
			Origins []struct {
				Kind string `json:"kind"`
				Job  string `json:"job"`
				Step int    `json:"step"`
			} `json:"origins"`
		} `json:"items"`
		Next string `json:"next"`
	}
	decodeJSON(t, body, &page)
	if len(page.Items) != 2 || page.Items[0].Name != "anime-style" || page.Next != "cinematic-dolly" {
		t.Fatalf("first page: %s", body)
	}
	var names []string
	after := ""
	for {
		_, body, _ = h.do("GET", "/api/v1/loras?limit=2&after="+url.QueryEscape(after), "", nil)
		page.Next = ""
		decodeJSON(t, body, &page)
		for _, it := range page.Items {
			names = append(names, it.Name)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if strings.Join(names, ",") != "anime-style,cinematic-dolly,slime,slime-v2_000000500,watercolor" {
		t.Fatalf("walked pages: %v", names)
	}
	_, body, _ = h.do("GET", "/api/v1/loras?base=wan2.1-t2v-1.3b&name=slime", "", nil)
	decodeJSON(t, body, &page)
	if len(page.Items) != 2 || page.Items[1].Origins[0].Kind != "training" || page.Items[1].Origins[0].Step != 500 {
		t.Fatalf("filter: %s", body)
	}

	// one LoRA with samples; a sample served as an image
	code, body, _ = h.do("GET", "/api/v1/loras/slime-v2_000000500", "", nil)
	var d struct {
		SHA256  string `json:"sha256"`
		Samples []struct {
			SHA256 string `json:"sha256"`
		} `json:"samples"`
		Installs []any `json:"installs"`
	}
	decodeJSON(t, body, &d)
	if code != 200 || len(d.Samples) != 3 || d.Installs == nil {
		t.Fatalf("lora detail: %d %s", code, body)
	}
	code, _, hd = h.do("GET", "/api/v1/loras/"+d.SHA256+"/samples/"+d.Samples[0].SHA256, "", nil)
	if code != 200 || hd.Get("Content-Type") != "image/png" {
		t.Fatalf("sample: %d %s", code, hd.Get("Content-Type"))
	}

	// pods: the fake RunPod's pod with its GPU and Scope, cost, limits
	_, body, _ = h.do("GET", "/api/v1/pods", "", nil)
	var pods struct {
		Items []struct {
			ID        string  `json:"id"`
			Status    string  `json:"status"`
			GPUType   string  `json:"gpu_type"`
			CostPerHr float64 `json:"cost_per_hr"`
			Recorded  bool    `json:"recorded"`
			Limits    *struct {
				IdleStop int64 `json:"idle_stop"`
			} `json:"limits"`
			GPUs []struct {
				Util int `json:"utilization_pct"`
			} `json:"gpus"`
			Scope *struct {
				Up        bool    `json:"up"`
				Sessions  int     `json:"sessions"`
				OutputFPS float64 `json:"output_fps"`
				Pipeline  *struct {
					PipelineID string `json:"pipeline_id"`
				} `json:"pipeline"`
			} `json:"scope"`
		} `json:"items"`
	}
	decodeJSON(t, body, &pods)
	if len(pods.Items) != 1 {
		t.Fatalf("pods: %s", body)
	}
	p := pods.Items[0]
	if p.ID != h.podID || p.Status != provider.StatusRunning || p.CostPerHr <= 0 || !p.Recorded || p.Limits == nil || p.Limits.IdleStop != int64(30*time.Minute) ||
		len(p.GPUs) != 1 || p.Scope == nil || !p.Scope.Up || p.Scope.Sessions != 1 || p.Scope.OutputFPS != 16 {
		t.Fatalf("pod: %s", body)
	}
	_, body, _ = h.do("GET", "/api/v1/pods/"+h.podID+"/gpu?since=0", "", nil)
	var series struct {
		Samples []struct {
			T    int64   `json:"t"`
			Util float64 `json:"utilization_ratio"`
			Mem  int64   `json:"memory_used_bytes"`
		} `json:"samples"`
		Last int64 `json:"last"`
	}
	decodeJSON(t, body, &series)
	if len(series.Samples) != 8 || series.Samples[0].Util <= 0 || series.Samples[0].Util > 1 || series.Samples[0].Mem < 1<<30 {
		t.Fatalf("gpu series: %s", body)
	}
	_, body, _ = h.do("GET", "/api/v1/pods/"+h.podID+"/gpu?since="+jsonNum(series.Last), "", nil)
	decodeJSON(t, body, &series)
	if len(series.Samples) != 0 {
		t.Fatalf("gpu since last: %s", body)
	}
	_, body, _ = h.do("GET", "/api/v1/deploys", "", nil)
	if !strings.Contains(body, `"healthy":true`) || !strings.Contains(body, `"pipeline_id":"longlive"`) {
		t.Fatalf("deploys: %s", body)
	}

	// jobs: state from the job folder, loss from loss_log.db, samples grid, log by offset
	_, body, _ = h.do("GET", "/api/v1/jobs", "", nil)
	if !strings.Contains(body, `"phase":"training"`) || !strings.Contains(body, `"step":640`) || !strings.Contains(body, `"local":true`) {
		t.Fatalf("jobs: %s", body)
	}
	_, body, _ = h.do("GET", "/api/v1/jobs/"+h.jobID, "", nil)
	if !strings.Contains(body, `"lora":"slime-v2_000000500"`) {
		t.Fatalf("job checkpoints with library entries: %s", body)
	}
	_, body, _ = h.do("GET", "/api/v1/jobs/"+h.jobID+"/loss?since_step=600", "", nil)
	var loss struct {
		Keys     []struct{ Key string } `json:"keys"`
		Key      string                 `json:"key"`
		Points   [][2]float64           `json:"points"`
		LastStep int                    `json:"last_step"`
	}
	decodeJSON(t, body, &loss)
	if loss.Key != "loss/loss" || len(loss.Keys) != 2 || len(loss.Points) != 40 || loss.LastStep != 640 || loss.Points[0][0] != 601 {
		t.Fatalf("loss: %s", body)
	}
	_, body, _ = h.do("GET", "/api/v1/jobs/"+h.jobID+"/samples", "", nil)
	if !strings.Contains(body, `"prompts":2`) || !strings.Contains(body, `"step":250`) {
		t.Fatalf("samples grid: %s", body)
	}
	_, body, _ = h.do("GET", "/api/v1/jobs/"+h.jobID+"/log?offset=0", "", nil)
	var chunk struct {
		Next int64  `json:"next"`
		Text string `json:"text"`
	}
	decodeJSON(t, body, &chunk)
	if !strings.Contains(chunk.Text, "640/1000") || chunk.Next == 0 {
		t.Fatalf("log: %s", body)
	}

	// /metrics: names, units, labels
	code, body, hd = h.do("GET", "/metrics", "", nil)
	if code != 200 || !strings.HasPrefix(hd.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`scopectl_build_info{goversion=`, `version="1.2.3-test"} 1`,
		`scopectl_gpu_utilization_ratio{gpu="0",pod="` + h.podID + `"} 0.`,
		`scopectl_gpu_memory_used_bytes{gpu="0",pod="` + h.podID + `"}`,
		`scopectl_pod_price_dollars_per_hour{gpu_type="NVIDIA GeForce RTX 4090",pod="` + h.podID + `"} 0.69`,
		`scopectl_pod_cost_dollars_total{pod="` + h.podID + `"}`,
		`scopectl_scope_up{pod="` + h.podID + `"} 1`, `scopectl_scope_output_fps{pod="` + h.podID + `"} 16`,
		`scopectl_train_step{job="` + h.jobID + `"} 640`, `scopectl_train_total_steps{job="` + h.jobID + `"} 1000`,
		`scopectl_train_loss{job="` + h.jobID + `"} 0.1432`, `scopectl_train_seconds_per_step{job="` + h.jobID + `"} 2.1`,
		`scopectl_transfer_bytes_total 0`, `scopectl_library_loras 5`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "scopectl_") && (strings.Contains(line, "step=") || strings.Contains(line, ".safetensors")) {
			t.Errorf("high-cardinality label: %s", line)
		}
	}

	// a sync to a local folder, seen in transfers (the entries here have no blob: it fails, one line)
	code, body, _ = h.do("POST", "/api/v1/loras/slime/sync", `{"to":"`+h.saveTo+`"}`, auth())
	if code != 200 || !strings.Contains(body, `"state":"running"`) {
		t.Fatalf("sync: %d %s", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body, _ = h.do("GET", "/api/v1/transfers", "", nil)
		if !strings.Contains(body, `"state":"running"`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(body, `"lora":"slime"`) || strings.Contains(body, `"state":"running"`) {
		t.Fatalf("transfers: %s", body)
	}

	// pod stop: needs the token; then the pod is EXITED
	code, body, _ = h.do("POST", "/api/v1/pods/"+h.podID+"/stop", `{}`, nil)
	if code != http.StatusUnauthorized {
		t.Fatalf("stop without token: %d %s", code, body)
	}
	code, body, _ = h.do("POST", "/api/v1/pods/"+h.podID+"/stop", `{}`, auth())
	if code != 200 || !strings.Contains(body, `"status":"EXITED"`) {
		t.Fatalf("stop: %d %s", code, body)
	}
	code, body, _ = h.do("POST", "/api/v1/pods/"+h.podID+"/terminate", `{}`, auth())
	if code != 400 || !strings.Contains(body, "confirm") {
		t.Fatalf("terminate without confirm: %d %s", code, body)
	}
	// job control in the job folder
	code, body, _ = h.do("POST", "/api/v1/jobs/"+h.jobID+"/stop", ``, auth())
	if code != 200 || !strings.Contains(body, `"job_id":"`+h.jobID+`"`) {
		t.Fatalf("job stop: %d %s", code, body)
	}
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestBadInput: every endpoint answers bad input with a one-line JSON error.
func TestBadInput(t *testing.T) {
	h := newHarness(t, true)
	cases := []struct {
		method, path, body string
		hdr                map[string]string
		code               int
	}{
		{"GET", "/api/v1/loras?limit=-1", "", nil, 400},
		{"GET", "/api/v1/loras?limit=abc", "", nil, 400},
		{"GET", "/api/v1/loras?limit=100000", "", nil, 400},
		{"GET", "/api/v1/loras?name=%5B", "", nil, 400},
		{"GET", "/api/v1/loras/nope", "", nil, 404},
		{"GET", "/api/v1/loras/abc", "", nil, 404},
		{"GET", "/api/v1/loras/slime/samples/..%2F..%2Fetc%2Fpasswd", "", nil, 404},
		{"GET", "/api/v1/pods/nope", "", nil, 404},
		{"GET", "/api/v1/pods/x/gpu?since=-5", "", nil, 400},
		{"GET", "/api/v1/jobs/nope", "", nil, 404},
		{"GET", "/api/v1/jobs/" + h.jobID + "/loss?since_step=x", "", nil, 400},
		{"GET", "/api/v1/jobs/" + h.jobID + "/log?offset=-1", "", nil, 400},
		{"GET", "/api/v1/jobs/" + h.jobID + "/samples/..%2Fspec.json", "", nil, 400},
		{"GET", "/api/v1/jobs/" + h.jobID + "/samples/x.png", "", nil, 400},
		{"GET", "/api/v1/transfers?limit=0", "", nil, 400},
		{"GET", "/api/v1/nothing", "", nil, 404},
		{"PUT", "/api/v1/loras", "", nil, 405},
		{"POST", "/api/v1/loras/slime/sync", `{"to":`, auth(), 400},
		{"POST", "/api/v1/loras/slime/sync", `{"to":"relative/dir"}`, auth(), 400},
		{"POST", "/api/v1/loras/slime/sync", `{"to":"/x","evil":1}`, auth(), 400},
		{"POST", "/api/v1/loras/slime/sync", `to=/x`, map[string]string{"Authorization": "Bearer " + canaryToken, "Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"POST", "/api/v1/loras/slime/sync", `{"to":"pod:nope"}`, auth(), 404},
		{"POST", "/api/v1/pods/" + h.podID + "/explode", `{}`, auth(), 404},
		{"POST", "/api/v1/jobs/" + h.jobID + "/explode", `{}`, auth(), 404},
		{"POST", "/api/v1/deploys", `{}`, auth(), 400},
		{"POST", "/api/v1/pods/" + h.podID + "/stop", `{}`, map[string]string{"Authorization": "Bearer wrong"}, 401},
		{"POST", "/api/v1/pods/" + h.podID + "/stop", `{}`, map[string]string{"Authorization": "Bearer " + canaryToken, "Origin": "https://evil.example"}, 403},
		{"POST", "/api/v1/pods/" + h.podID + "/stop", `{}`, map[string]string{"Authorization": "Bearer " + canaryToken, "Sec-Fetch-Site": "cross-site"}, 403},
		{"POST", "/login", `{"token":"wrong"}`, nil, 401},
		{"POST", "/login", `[1,2`, nil, 400},
	}
	for _, c := range cases {
		code, body, hd := h.do(c.method, c.path, c.body, c.hdr)
		var e struct {
			Error string `json:"error"`
		}
		if code != c.code || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" || strings.Count(strings.TrimSpace(body), "\n") != 0 ||
			!strings.HasPrefix(hd.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %d %q (want %d and a one-line JSON error)", c.method, c.path, code, body, c.code)
		}
	}
}

// TestAuth: off loopback every read needs the token; the login cookie works and never
// holds the token; the page carries a strict CSP and no inline script.
func TestAuth(t *testing.T) {
	h := newHarness(t, false)
	for _, p := range []string{"/api/v1/loras", "/api/v1/pods", "/api/v1/jobs", "/api/v1/transfers", "/api/v1/deploys", "/api/v1/cost", "/metrics"} {
		if code, _, _ := h.do("GET", p, "", nil); code != 401 {
			t.Errorf("GET %s without token: %d", p, code)
		}
		if code, _, _ := h.do("GET", p, "", auth()); code != 200 {
			t.Errorf("GET %s with token: %d", p, code)
		}
	}
	if code, body, _ := h.do("GET", "/healthz", "", nil); code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	code, _, hd := h.do("POST", "/login", `{"token":"`+canaryToken+`"}`, nil)
	cookie := hd.Get("Set-Cookie")
	if code != 200 || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Fatalf("login: %d %q", code, cookie)
	}
	c := strings.SplitN(cookie, ";", 2)[0]
	if code, _, _ := h.do("GET", "/api/v1/loras", "", map[string]string{"Cookie": c}); code != 200 {
		t.Errorf("read with the session cookie: %d", code)
	}
	if code, _, _ := h.do("GET", "/api/v1/loras", "", map[string]string{"Cookie": c + "x"}); code != 401 {
		t.Errorf("read with a forged cookie: %d", code)
	}
	code, body, hd := h.do("GET", "/", "", nil)
	csp := hd.Get("Content-Security-Policy")
	if code != 200 || !strings.HasPrefix(hd.Get("Content-Type"), "text/html") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("page: %d %q", code, csp)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " on") && strings.Contains(body, "onclick=") {
		t.Error("the page has an inline script")
	}
	for _, a := range []string{"/assets/app.js", "/assets/app.css", "/assets/chart.min.js", "/assets/chart.js-LICENSE.txt"} {
		if code, _, _ := h.do("GET", a, "", nil); code != 200 {
			t.Errorf("%s: %d", a, code)
		}
	}
}

// TestListSeesNewEntries: the cached list follows the store at once.
func TestListSeesNewEntries(t *testing.T) {
	h := newHarness(t, true)
	_, before, _ := h.do("GET", "/api/v1/loras?limit=10", "", nil)
	if err := h.lib.Store.AddLoRA(context.Background(), store.LoRA{SHA256: strings.Repeat("7", 64), Name: "zz-new", Size: 1, Path: "/x",
		Family: "comfy", Base: "wan2.1-t2v-1.3b", Origins: []store.Origin{{Kind: "local", Path: "/x"}}}); err != nil {
		t.Fatal(err)
	}
	_, after, _ := h.do("GET", "/api/v1/loras?limit=10", "", nil)
	if strings.Contains(before, "zz-new") || !strings.Contains(after, "zz-new") {
		t.Fatalf("list after an add: %s", after)
	}
}
