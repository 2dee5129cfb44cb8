package server_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/inflight"
	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/server"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// Canary secrets: none may ever appear in an answer, the page or the metrics.
const (
	canaryHF      = "hf_CANARYserveCANARYserveCANARY0001"
	canaryRunPod  = "rpa_CANARYSERVECANARYSERVECANARY0002"
	canaryCivitAI = "civitai0canary0serve0canary0serve03"
	canaryToken   = "sct_CANARYservetokenCANARYservetoken04"
)

var canaries = []string{canaryHF, canaryRunPod, canaryCivitAI, canaryToken}

type harness struct {
	t      *testing.T
	srv    *server.Server
	http   *httptest.Server
	rp     *runpodtest.Server
	client *runpod.Client
	lib    *library.Library
	podID  string
	jobID  string
	jobDir string
	saveTo string // a LoRA folder syncs may go to
	scope  string // the Scope stand-in's URL (every pod's Scope)
	xfers  inflight.Dir
}

// fakeSMI plays nvidia-smi for one GPU whose readings move with every call.
func fakeSMI() gpu.Source {
	var n atomic.Int64
	return gpu.SMI{Run: func(ctx context.Context, args []string) ([]byte, error) {
		i := n.Add(1)
		util := 40 + (i*17)%55
		mem := 18000 + (i*911)%12000
		return []byte(fmt.Sprintf("0, GPU-0a1b2c3d-0000-1111-2222-333344445555, NVIDIA RTX A6000, %d, 49140, %d, %d, %.2f, 300.00, 550.54.15\n",
			mem, util, 55+i%9, 180+float64(i%7)*12)), nil
	}}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startScope runs the Scope stand-in with a pipeline loaded and one streaming session.
func startScope(t *testing.T) string { return startScopeWith(t, "10ms", 1, true) }

// startScopeWith runs the Scope stand-in whose pipeline loads take delay, with that many
// streaming sessions, and (load) longlive loaded.
func startScopeWith(t *testing.T, delay string, sessions int, load bool) string {
	bin := testkit.GoBuild(t, testkit.Build{Pkg: "./internal/scope/scopestub", Static: true})
	port := freePort(t)
	loras := t.TempDir()
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--load-delay", delay, "--sessions", strconv.Itoa(sessions))
	cmd.Env = append(os.Environ(), "DAYDREAM_SCOPE_LORA_DIR="+loras)
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	for i := 0; ; i++ {
		if r, err := http.Get(base + "/health"); err == nil {
			r.Body.Close()
			break
		}
		if i > 100 {
			t.Fatal("scopestub did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !load {
		return base
	}
	os.WriteFile(filepath.Join(loras, "slime.safetensors"), []byte("x"), 0o644)
	sc := &scope.Client{Base: base}
	ctx := context.Background()
	if err := sc.LoadPipeline(ctx, "longlive", []scope.LoRALoad{{Path: filepath.Join(loras, "slime.safetensors"), Scale: 0.8}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.WaitLoaded(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return base
}

func writePNG(t *testing.T, p string, c color.RGBA) {
	img := image.NewRGBA(image.Rect(0, 0, 96, 64))
	for y := 0; y < 64; y++ {
		for x := 0; x < 96; x++ {
			k := uint8((x + y) * 2)
			img.Set(x, y, color.RGBA{c.R ^ k/3, c.G ^ k/4, c.B ^ k/2, 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// lossLog writes a loss_log.db with ai-toolkit's schema (see aitk.LossLogName).
func lossLog(t *testing.T, p string, steps int) {
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`PRAGMA journal_mode=WAL`,
		`CREATE TABLE steps(step INTEGER PRIMARY KEY, wall_time REAL NOT NULL)`,
		`CREATE TABLE metric_keys(key TEXT PRIMARY KEY, first_seen_step INTEGER, last_seen_step INTEGER)`,
		`CREATE TABLE metrics(step INTEGER NOT NULL, key TEXT NOT NULL, value_real REAL, value_text TEXT, PRIMARY KEY(step, key))`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	tx, _ := db.Begin()
	t0 := float64(time.Now().Add(-time.Hour).Unix())
	for s := 1; s <= steps; s++ {
		tx.Exec(`INSERT INTO steps VALUES(?, ?)`, s, t0+float64(s)*2.1)
		loss := 0.12 + 0.25/float64(1+s/20) + 0.03*float64((s*7919)%13)/13
		tx.Exec(`INSERT INTO metrics VALUES(?, 'loss/loss', ?, NULL)`, s, loss)
		tx.Exec(`INSERT INTO metrics VALUES(?, 'learning_rate', ?, NULL)`, s, 1e-4)
	}
	tx.Exec(`INSERT INTO metric_keys VALUES('loss/loss', 1, ?), ('learning_rate', 1, ?)`, steps, steps)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// newHarness builds the real core in a temporary folder: a store with LoRAs (one with
// samples, one from a training job), the fake RunPod with a running Scope pod, the
// Scope stand-in, a training job whose folder is on this machine.
func newHarness(t *testing.T, open bool) *harness {
	t.Setenv("HF_TOKEN", canaryHF)
	t.Setenv("RUNPOD_API_KEY", canaryRunPod)
	t.Setenv("CIVITAI_API_KEY", canaryCivitAI)
	red := &secret.Redactor{}
	for _, c := range canaries {
		red.Add(secret.New(c))
	}
	h := &harness{t: t}
	ctx := context.Background()
	lib, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	h.lib = lib

	// library: real entries; a CivitAI one whose URL carried a token once
	for i, n := range []struct{ name, base, fam string }{
		{"anime-style", "wan2.1-t2v-1.3b", "comfy"}, {"cinematic-dolly", "wan2.1-t2v-14b", "diffusers"},
		{"slime", "wan2.1-t2v-1.3b", "comfy"}, {"watercolor", "wan2.1-i2v-14b", "kohya"}} {
		sha := fmt.Sprintf("%064x", 0xabc000+i)
		o := store.Origin{Kind: "local", Path: "/home/me/loras/" + n.name + ".safetensors"}
		if i == 1 {
			o = store.Origin{Kind: "civitai", ModelID: "1234", VersionID: "5678", URL: "https://civitai.com/api/download/models/5678?token=" + canaryCivitAI}
		}
		if err := lib.Store.AddLoRA(ctx, store.LoRA{SHA256: sha, Name: n.name, Size: int64(20+i) << 20, Path: "/lib/" + sha,
			Family: n.fam, Base: n.base, Rank: 16 << (i % 2), Origins: []store.Origin{o}}); err != nil {
			t.Fatal(err)
		}
	}
	jobSHA := fmt.Sprintf("%064x", 0xdef001)
	if err := lib.Store.AddLoRA(ctx, store.LoRA{SHA256: jobSHA, Name: "slime-v2_000000500", Size: 87 << 20, Path: "/lib/" + jobSHA,
		Family: "comfy", Base: "wan2.1-t2v-1.3b", Rank: 32, Origins: []store.Origin{{Kind: "training", Job: "slime-v2-1a2b3c4d", Step: 500}}}); err != nil {
		t.Fatal(err)
	}
	smp := t.TempDir()
	for i, c := range []color.RGBA{{200, 80, 60, 255}, {60, 140, 220, 255}, {90, 200, 120, 255}} {
		p := filepath.Join(smp, fmt.Sprintf("1732000000%03d__000000500_%d.png", i, i))
		writePNG(t, p, c)
		if _, err := lib.AddSample(ctx, p, filepath.Base(p), "slime-v2_000000500", "ssh://pod/workspace/output/samples"); err != nil {
			t.Fatal(err)
		}
	}

	// the fake RunPod, with a running pod serving Scope (the stand-in, behind the proxy)
	scopeURL := startScope(t)
	h.scope = scopeURL
	h.rp = runpodtest.New(t, runpodtest.Options{APIKey: canaryRunPod, Runtime: func(runpodtest.PodView) (*runpodtest.Container, error) {
		return &runpodtest.Container{HTTP: map[int]string{deploy.ContainerPort: scopeURL}}, nil
	}})
	opts := runpod.OptionsFromEnv(func(string) string { return "" })
	opts.APIKey, opts.APIURL, opts.GraphQLURL, opts.Redactor = secret.New(canaryRunPod), h.rp.URL+"/v1", h.rp.URL+"/graphql", red
	opts.ProxyURL = h.rp.ProxyURL()
	h.client, err = runpod.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.client.Create(ctx, provider.CreateSpec{Name: "scope-a6000", GPUType: "NVIDIA GeForce RTX 4090", Image: "daydreamlive/scope:main",
		Ports: []string{"8000/http", "22/tcp"}, VolumeGB: 50, RequestID: "0123456789abcdef0123456789abcdef",
		SecretEnv: map[string]secret.Secret{"HF_TOKEN": secret.New(canaryHF)}})
	if err != nil {
		t.Fatal(err)
	}
	h.podID = p.ID
	if ps, ok := lib.Store.(store.PodStore); ok {
		ps.PutPod(ctx, store.Pod{RequestID: "0123456789abcdef0123456789abcdef", Provider: runpod.Name, ID: p.ID, Name: "scope-a6000",
			GPUType: p.GPUType, GPUCount: 1, CostPerHr: p.CostPerHr, CreatedAt: time.Now().Add(-time.Hour), IdleStop: 30 * time.Minute})
	}
	if _, err := deploytestWait(ctx, h.client, p.ID); err != nil {
		t.Fatal(err)
	}

	// a training job whose folder is on this machine
	h.jobID, h.jobDir = "slime-v2-1a2b3c4d", t.TempDir()
	saveDir := filepath.Join(h.jobDir, "output", "slime-v2")
	os.MkdirAll(filepath.Join(saveDir, "samples"), 0o755)
	spec := train.Spec{Version: 1, JobID: h.jobID, Name: "slime-v2", SaveDir: saveDir, Command: []string{"python", "run.py", "{config}"}, TotalSteps: 1000}
	b, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(h.jobDir, train.SpecFile), b, 0o644)
	loss := 0.1432
	st := train.State{JobID: h.jobID, Name: "slime-v2", Run: 1, Phase: train.PhaseTraining, Step: 640, Total: 1000, SecPerIt: 2.1, Loss: &loss, LR: 1e-4,
		Started: time.Now().Add(-25 * time.Minute), Updated: time.Now(),
		Checkpoints: []train.Checkpoint{{Step: 500, File: "slime-v2_000000500.safetensors", Size: 87 << 20, SHA256: jobSHA, StagedAt: time.Now()}}}
	os.WriteFile(filepath.Join(h.jobDir, train.StateFile), train.MarshalState(&st), 0o644)
	lossLog(t, filepath.Join(saveDir, "loss_log.db"), 640)
	for step := 250; step <= 500; step += 250 {
		for i, c := range []color.RGBA{{220, 120, 40, 255}, {40, 120, 220, 255}} {
			writePNG(t, filepath.Join(saveDir, "samples", fmt.Sprintf("17320%08d__%09d_%d.png", step, step, i)), color.RGBA{c.R, c.G + uint8(step/10), c.B, 255})
		}
	}
	os.WriteFile(filepath.Join(h.jobDir, train.LogFile), []byte("loading model\nHF_TOKEN="+canaryHF+"\nslime-v2:  64%|██████    | 640/1000 [22:24<12:36,  2.10s/it, lr: 1.0e-04 loss: 1.432e-01]\n"), 0o644)
	if ts, ok := lib.Store.(store.TrainStore); ok {
		ts.PutTrainJob(ctx, store.TrainJob{ID: h.jobID, Name: "slime-v2", Target: "ssh://root@203.0.113.7:40022", PodID: p.ID, Workspace: "/workspace",
			JobDir: h.jobDir, Binary: "/workspace/scopectl", SaveDir: saveDir, Steps: 1000, CostPerHr: 0.69, StartedAt: time.Now().Add(-25 * time.Minute), Phase: "training", Step: 640})
	}
	h.saveTo = t.TempDir()
	h.xfers = inflight.Dir(t.TempDir())

	// network volumes: one the ledger has known for ten days, one it meets now; and a
	// run of the pod three days ago (ended by scopectl)
	h.rp.SetNetworkVolumes([]runpodtest.NetworkVolume{{ID: "nv7models", Name: "models", SizeGB: 100, DataCenterID: "EU-RO-1"},
		{ID: "nvbigdata", Name: "datasets", SizeGB: 1500, DataCenterID: "EU-RO-1"}})
	if ls, ok := lib.Store.(store.LedgerStore); ok {
		t10 := time.Now().Add(-240 * time.Hour).UTC()
		ls.AddRun(ctx, store.Run{Provider: ledger.VolumeProvider(runpod.Name), PodID: "nv7models", Name: "models", VolumeGB: 100,
			NetworkVolumeID: "nv7models", StartedAt: t10, SeenAt: time.Now().Add(-time.Hour).UTC()})
		t3, e3 := time.Now().Add(-72*time.Hour).UTC(), time.Now().Add(-70*time.Hour).UTC()
		ls.AddRun(ctx, store.Run{Provider: runpod.Name, PodID: p.ID, Name: "scope-a6000", GPUType: p.GPUType, CostPerHr: 0.69, VolumeGB: 50,
			StartedAt: t3, SeenAt: e3, EndedAt: &e3, EndSource: ledger.EndScopectl})
	}

	smi := fakeSMI()
	srv, err := server.New(server.Options{Lib: lib, RunPod: h.client, Token: secret.New(canaryToken), OpenReads: open, Redactor: red,
		Version: "1.2.3-test", Interval: time.Hour, VolumeEvery: time.Nanosecond, ScopeURL: func(provider.Pod) string { return scopeURL }, LogEvery: 100 * time.Millisecond, Transfers: h.xfers,
		PodGPU: func(context.Context, provider.Pod) (gpu.Source, error) { return smi, nil }})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	// a few GPU readings, as the sampler takes them over time
	for i := 0; i < 8; i++ {
		srv.Poll(ctx)
	}
	h.http = httptest.NewServer(srv.Handler())
	t.Cleanup(h.http.Close)
	return h
}

func deploytestWait(ctx context.Context, c *runpod.Client, id string) (*provider.Pod, error) {
	for i := 0; i < 200; i++ {
		p, err := c.Get(ctx, id)
		if err == nil && p.Status == provider.StatusRunning {
			return p, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("pod %s never ran", id)
}

// do sends a request and returns the status and body.
func (h *harness) do(method, path, body string, hdr map[string]string) (int, string, http.Header) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.http.URL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer r.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(r.Body)
	for _, c := range canaries {
		if strings.Contains(b.String(), c) || strings.Contains(fmt.Sprint(r.Header), c) {
			h.t.Errorf("%s %s: a canary secret in the answer", method, path)
		}
	}
	return r.StatusCode, b.String(), r.Header
}

func auth() map[string]string { return map[string]string{"Authorization": "Bearer " + canaryToken} }
