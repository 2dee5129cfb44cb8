package server_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/server"
	"github.com/daydreamlive/scopectl/internal/store"
)

// POST /api/v1/deploys runs the deploy core `scopectl deploy` runs, against the fake
// RunPod: an existing pod (found by scopectl's request id) is made to match and Scope
// (the stand-in, behind the pod's proxy URL) answers healthy with the pipeline loaded;
// a dry run of --new plans a pod; bad input is a JSON error.
func TestAPIDeploy(t *testing.T) {
	ctx := context.Background()
	lib, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	scopeURL := startScope(t)
	// Every pod's container is the stand-in, reached through the fake RunPod's proxy.
	rt := func(runpodtest.PodView) (*runpodtest.Container, error) {
		return &runpodtest.Container{HTTP: map[int]string{deploy.ContainerPort: scopeURL}}, nil
	}
	rp := runpodtest.New(t, runpodtest.Options{APIKey: canaryRunPod, BootDelay: 10 * time.Millisecond, Runtime: rt})
	opts := runpod.OptionsFromEnv(func(string) string { return "" })
	opts.APIKey, opts.APIURL, opts.GraphQLURL = secret.New(canaryRunPod), rp.RESTURL(), rp.GraphQLURL()
	opts.ProxyURL = rp.ProxyURL()
	c, err := runpod.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	const reqID = "fedcba9876543210fedcba9876543210"
	p, err := c.Create(ctx, provider.CreateSpec{Name: "scope", GPUType: "NVIDIA GeForce RTX 4090", Image: "daydreamlive/scope:main",
		Ports: deploy.PodPorts, VolumeGB: 50, RequestID: reqID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deploytestWait(ctx, c, p.ID); err != nil {
		t.Fatal(err)
	}
	lib.Store.(store.PodStore).PutPod(ctx, store.Pod{RequestID: reqID, Provider: runpod.Name, ID: p.ID, Name: "scope", CreatedAt: time.Now()})
	red := &secret.Redactor{}
	red.Add(secret.New(canaryToken))
	// The face's deployer (as scopectl serve gives it), whose guard install answers as
	// guard.Install would: the result carries it as deploy --json does.
	guarded := ""
	dep := &deploy.Deployer{Lib: lib, RunPod: c, Pods: lib.Store.(store.PodStore),
		InstallGuard: func(_ context.Context, p *provider.Pod) (*deploy.GuardInfo, error) {
			guarded = p.ID
			return &deploy.GuardInfo{Pod: p.ID, Limits: "idle-stop 30m0s", Log: "/workspace/.scopectl/guard.log", PID: 4242}, nil
		}}
	srv, err := server.New(server.Options{Lib: lib, RunPod: c, Token: secret.New(canaryToken), Redactor: red, Interval: time.Hour, Deployer: dep})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	h := &harness{t: t, http: hs}

	code, body, hdr := h.do("POST", "/api/v1/deploys", `{"pod":"`+reqID+`","image":"daydreamlive/scope:v2","env":{"FOO":"bar"},"pipeline":"longlive","wait":"30s"}`, auth())
	if code != 202 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("deploy: %d %s", code, body)
	}
	var job server.DeployJob
	decodeJSON(t, body, &job)
	if job.State != server.JobRunning || hdr.Get("Location") != "/api/v1/deploys/"+job.ID || len(job.Plan) == 0 || job.Plan[0].Action != "update" {
		t.Fatalf("deploy job: %s", body)
	}
	job = h.waitDeploy(job.ID)
	if job.State != server.JobDone || job.Result == nil || job.Phase != "deployed" {
		t.Fatalf("deploy job at its end: %+v", job)
	}
	res := *job.Result
	if res.Pod == nil || res.Pod.ID != p.ID || res.Pod.Image != "daydreamlive/scope:v2" || res.Pod.Env["FOO"] != "bar" || res.Created == nil || *res.Created ||
		res.Health == nil || res.URL != c.ProxyURL(p.ID, deploy.ContainerPort) || res.Pipeline == nil || len(res.Steps) == 0 || res.Steps[0].Action != "update" {
		t.Fatalf("deploy result: %s", body)
	}
	if g := res.Guard; g == nil || guarded != p.ID || g.Pod != p.ID || g.PID != 4242 || g.Limits != "idle-stop 30m0s" {
		t.Fatalf("deploy result's guard: %+v (installed on %q)", g, guarded)
	}
	_, body, _ = h.do("GET", "/api/v1/deploys/"+job.ID, "", auth())
	if !strings.Contains(body, `"guard":{"pod":"`+p.ID+`","limits":"idle-stop 30m0s","log":"/workspace/.scopectl/guard.log","pid":4242,"already_running":false}`) {
		t.Fatalf("deploy job's guard JSON: %s", body)
	}
	got, err := c.Get(ctx, p.ID)
	if err != nil || got.Image != "daydreamlive/scope:v2" || got.Status != provider.StatusRunning {
		t.Fatalf("pod after deploy: %+v %v", got, err)
	}
	// The list shows it.
	code, body, _ = h.do("GET", "/api/v1/deploys", "", auth())
	if code != 200 || !strings.Contains(body, `"jobs":[{"id":"`+job.ID+`"`) {
		t.Fatalf("deploys list: %d %s", code, body)
	}
	// Again: nothing to change.
	code, body, _ = h.do("POST", "/api/v1/deploys", `{"pod":"`+p.ID+`","image":"daydreamlive/scope:v2","env":{"FOO":"bar"},"dry_run":true}`, auth())
	if code != 200 || strings.Contains(body, `"update"`) || !strings.Contains(body, `"dry_run":true`) {
		t.Fatalf("deploy again (dry run): %d %s", code, body)
	}

	// --new, dry run: the plan (under another name: a pod named scope exists, on another
	// GPU: refused below); for real this server (no pod records of its own) says 501.
	code, body, _ = h.do("POST", "/api/v1/deploys", `{"new":true,"name":"another","gpu":"NVIDIA RTX A6000","dry_run":true}`, auth())
	if code != 200 || !strings.Contains(body, `"action":"create"`) || !strings.Contains(body, "NVIDIA RTX A6000") || !strings.Contains(body, "50 GB volume") {
		t.Fatalf("deploy --new dry run: %d %s", code, body)
	}
	before := len(rp.Pods())
	for _, c := range []struct {
		body string
		code int
	}{
		{`{}`, 400},
		{`{"host":"http://example.com"}`, 400},
		{`{"host":"ssh://a@b:22","pod":"x"}`, 400},
		{`{"new":true}`, 400},
		{`{"new":true,"name":"another","gpu":"NVIDIA RTX A6000"}`, 501},
		{`{"new":true,"gpu":"NVIDIA RTX A6000","dry_run":true}`, 409}, // the pod named scope runs on a 4090
		{`{"pod":"nope"}`, 404},
		{`{"pod":"` + p.ID + `","wait":"soon"}`, 400},
		{`{"pod":"` + p.ID + `","loras":["slime:99"]}`, 400},
		{`{"pod":"` + p.ID + `","bogus":1}`, 400},
	} {
		code, body, _ := h.do("POST", "/api/v1/deploys", c.body, auth())
		if code != c.code || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s, want %d", c.body, code, body, c.code)
		}
	}
	if len(rp.Pods()) != before {
		t.Error("a refused deploy created a pod")
	}
	if code, body, _ := h.do("GET", "/api/v1/deploys/d999999", "", auth()); code != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("unknown deploy: %d %s", code, body)
	}
	// Actions need the token.
	if code, _, _ := h.do("POST", "/api/v1/deploys", `{"pod":"`+p.ID+`","dry_run":true}`, nil); code != 401 {
		t.Errorf("deploy without the token: %d", code)
	}
}

// waitDeploy polls GET /api/v1/deploys/{id} until the job ends (at most a minute).
func (h *harness) waitDeploy(id string) server.DeployJob {
	h.t.Helper()
	var j server.DeployJob
	for i := 0; i < 600; i++ {
		code, body, _ := h.do("GET", "/api/v1/deploys/"+id, "", auth())
		if code != 200 {
			h.t.Fatalf("deploy %s: %d %s", id, code, body)
		}
		decodeJSON(h.t, body, &j)
		if j.State != server.JobRunning {
			return j
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("deploy %s still running: %+v", id, j)
	return j
}

// A deploy in flight is canceled by DELETE: its context ends, the job says canceled,
// the pod it deployed to is left as it was; a job that has ended cannot be canceled.
func TestAPIDeployCancel(t *testing.T) {
	ctx := context.Background()
	lib, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	slow := startScopeWith(t, "10m", 0, false) // a pipeline load that never ends in time
	rt := func(runpodtest.PodView) (*runpodtest.Container, error) {
		return &runpodtest.Container{HTTP: map[int]string{deploy.ContainerPort: slow}}, nil
	}
	rp := runpodtest.New(t, runpodtest.Options{APIKey: canaryRunPod, BootDelay: 10 * time.Millisecond, Runtime: rt})
	opts := runpod.OptionsFromEnv(func(string) string { return "" })
	opts.APIKey, opts.APIURL, opts.GraphQLURL, opts.ProxyURL = secret.New(canaryRunPod), rp.RESTURL(), rp.GraphQLURL(), rp.ProxyURL()
	c, err := runpod.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Create(ctx, provider.CreateSpec{Name: "scope", GPUType: "NVIDIA GeForce RTX 4090", Image: "daydreamlive/scope:main", Ports: deploy.PodPorts, VolumeGB: 50,
		RequestID: "00112233445566778899aabbccddeeff"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deploytestWait(ctx, c, p.ID); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Lib: lib, RunPod: c, Token: secret.New(canaryToken), Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	h := &harness{t: t, http: hs}
	code, body, _ := h.do("POST", "/api/v1/deploys", `{"pod":"`+p.ID+`","image":"daydreamlive/scope:main","pipeline":"streamdiffusionv2","wait":"5m"}`, auth())
	if code != 202 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	var job server.DeployJob
	decodeJSON(t, body, &job)
	// it runs: Scope loads the pipeline (for ten minutes)
	for i := 0; ; i++ {
		_, body, _ = h.do("GET", "/api/v1/deploys/"+job.ID, "", auth())
		decodeJSON(t, body, &job)
		if job.State != server.JobRunning || i > 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if job.State != server.JobRunning {
		t.Fatalf("the deploy ended early: %+v", job)
	}
	if code, body, _ := h.do("DELETE", "/api/v1/deploys/"+job.ID, "", nil); code != 401 {
		t.Errorf("cancel without the token: %d %s", code, body)
	}
	if code, body, _ := h.do("DELETE", "/api/v1/deploys/"+job.ID, "", map[string]string{"Authorization": "Bearer " + canaryToken, "Origin": "http://evil.example"}); code != 403 {
		t.Errorf("cross-site cancel: %d %s", code, body)
	}
	t0 := time.Now()
	code, body, _ = h.do("DELETE", "/api/v1/deploys/"+job.ID, "", auth())
	decodeJSON(t, body, &job)
	if code != 200 || job.State != server.JobCanceled || job.Ended == nil || time.Since(t0) > 5*time.Second {
		t.Fatalf("cancel: %d %s", code, body)
	}
	if code, body, _ := h.do("DELETE", "/api/v1/deploys/"+job.ID, "", auth()); code != 409 {
		t.Errorf("cancel again: %d %s", code, body)
	}
	if code, _, _ := h.do("DELETE", "/api/v1/deploys/nope", "", auth()); code != 404 {
		t.Errorf("cancel of an unknown deploy: %d", code)
	}
	if got, err := c.Get(ctx, p.ID); err != nil || got.Status != provider.StatusRunning {
		t.Errorf("the pod after the cancel: %+v %v", got, err)
	}
}
