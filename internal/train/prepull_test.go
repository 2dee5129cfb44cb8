package train

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
)

const wanRepo = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" // what aitktest.Config names

// wanFiles is a small Diffusers repo laid out like Wan2.1's, with duplicates the
// pre-pull must skip.
func wanFiles() []hftest.File {
	big := bytes.Repeat([]byte("wan-transformer-weights."), 48<<10) // ~1.1 MB
	return []hftest.File{
		{Path: ".gitattributes", Data: []byte("*.safetensors filter=lfs\n")},
		{Path: "README.md", Data: []byte("# tiny wan\n")},
		{Path: "assets/logo.png", Data: []byte("png"), LFS: true},
		{Path: "model_index.json", Data: []byte(`{"_class_name":"WanPipeline","transformer":["diffusers","WanTransformer3DModel"],"vae":["diffusers","AutoencoderKLWan"]}`)},
		{Path: "scheduler/scheduler_config.json", Data: []byte(`{"_class_name":"UniPCMultistepScheduler"}`)},
		{Path: "tokenizer/spiece.model", Data: []byte("spm"), LFS: true},
		{Path: "tokenizer/tokenizer_config.json", Data: []byte(`{}`)},
		{Path: "transformer/config.json", Data: []byte(`{"_class_name":"WanTransformer3DModel"}`)},
		{Path: "transformer/diffusion_pytorch_model.safetensors", Data: big, LFS: true},
		{Path: "transformer/diffusion_pytorch_model.bin", Data: []byte("duplicate .bin weights"), LFS: true},
		{Path: "vae/config.json", Data: []byte(`{"_class_name":"AutoencoderKLWan"}`)},
		{Path: "vae/diffusion_pytorch_model.safetensors", Data: []byte("vae weights"), LFS: true},
		{Path: "vae/diffusion_flax_model.msgpack", Data: []byte("flax"), LFS: true},
	}
}

// pullJob is a job whose spec pulls the config's base model from srv into hfHome.
func pullJob(t *testing.T, srv *hftest.Server, hfHome string, token string) string {
	t.Helper()
	jd, s := job(t, aitktest.Config{Name: "tlora", Steps: 10, SaveEvery: 5, Keep: 4},
		"HF_HOME="+hfHome, "HF_ENDPOINT="+srv.URL())
	cfg, err := aitk.ReadFile(s.Config, aitk.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Pull = aitk.PrepullPlan(cfg)
	if len(s.Pull) != 1 || s.Pull[0].Repo != wanRepo {
		t.Fatalf("plan %+v", s.Pull)
	}
	if token != "" {
		os.MkdirAll(filepath.Join(jd, SecretsDir), 0o700)
		os.WriteFile(filepath.Join(jd, SecretsDir, "HF_TOKEN"), []byte(token+"\n"), 0o600)
		s.SecretEnv = []string{"HF_TOKEN"}
	}
	if err := writeJSON(filepath.Join(jd, SpecFile), s, 0o600); err != nil {
		t.Fatal(err)
	}
	return jd
}

// phases records every phase state.json shows while fn runs.
func phases(jd string, fn func()) []string {
	var (
		mu   sync.Mutex
		seen []string
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100000; i++ {
			if st, err := ReadState(jd); err == nil {
				mu.Lock()
				if len(seen) == 0 || seen[len(seen)-1] != st.Phase {
					seen = append(seen, st.Phase)
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return seen
}

func TestSupervisePrepull(t *testing.T) {
	srv := hftest.Start(t, hftest.Options{})
	commit := srv.AddRepo(hftest.Repo{ID: wanRepo, Files: wanFiles()})
	srv.SlowAt("transformer/diffusion_pytorch_model.safetensors", -1, 15*time.Millisecond) // long enough to be seen
	hfHome := filepath.Join(t.TempDir(), "hf")
	jd := pullJob(t, srv, hfHome, "")

	var st *State
	seen := phases(jd, func() { st = supervise(t, jd) })
	if st.Phase != PhaseDone {
		t.Fatalf("phase %s (%s)", st.Phase, st.Reason)
	}
	// The download came first, then the trainer.
	iDown, iTrain := -1, -1
	for i, p := range seen {
		if p == PhaseDownloading && iDown < 0 {
			iDown = i
		}
		if (p == PhaseLoading || p == PhaseTraining) && iTrain < 0 {
			iTrain = i
		}
	}
	if iDown < 0 || iTrain < 0 || iDown > iTrain {
		t.Errorf("phases %v: want %q before the trainer's", seen, PhaseDownloading)
	}
	d := st.Download
	if d == nil || !d.Ended || d.Done != d.Total || d.Total < 1<<20 || d.Items != 1 || d.Files != 8 {
		b, _ := json.Marshal(d)
		t.Fatalf("download %s", b)
	}
	// huggingface_hub's layout under HF_HOME/hub: what diffusers loads, nothing else.
	repoDir := filepath.Join(hfHome, "hub", "models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers")
	snap := filepath.Join(repoDir, "snapshots", commit)
	for _, f := range []string{"model_index.json", "scheduler/scheduler_config.json", "tokenizer/spiece.model", "tokenizer/tokenizer_config.json",
		"transformer/config.json", "transformer/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"} {
		if _, err := os.Stat(filepath.Join(snap, f)); err != nil {
			t.Errorf("cache: %v", err)
		}
	}
	for _, f := range []string{"transformer/diffusion_pytorch_model.bin", "vae/diffusion_flax_model.msgpack", "README.md", "assets/logo.png"} {
		if _, err := os.Lstat(filepath.Join(snap, f)); err == nil {
			t.Errorf("cache: %s pulled, diffusers does not load it", f)
		}
	}
	if ref, err := os.ReadFile(filepath.Join(repoDir, "refs", "main")); err != nil || string(ref) != commit {
		t.Errorf("refs/main: %q %v", ref, err)
	}
	tl, _ := os.ReadFile(filepath.Join(jd, LogFile))
	if !strings.Contains(string(tl), "[scopectl] run 1") {
		t.Errorf("the trainer did not start")
	}

	// A resume of the job finds everything in the cache: nothing is downloaded again.
	before := srv.CDNBytes("transformer/diffusion_pytorch_model.safetensors")
	st = supervise(t, jd)
	if st.Phase != PhaseDone || st.Run != 2 || st.Download == nil || !st.Download.Ended {
		t.Fatalf("second run: %s (%s)", st.Phase, st.Reason)
	}
	if after := srv.CDNBytes("transformer/diffusion_pytorch_model.safetensors"); after != before {
		t.Errorf("second run downloaded %d bytes again", after-before)
	}
}

func TestSupervisePrepullGated(t *testing.T) {
	srv := hftest.Start(t, hftest.Options{})
	srv.AddRepo(hftest.Repo{ID: wanRepo, Gated: true, Files: wanFiles()})
	const tok = "hf_NotAcceptedTokenSecret0123456789"
	srv.AddToken(tok, false)
	jd := pullJob(t, srv, filepath.Join(t.TempDir(), "hf"), tok)

	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Supervise(ctx, jd, &log); err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(jd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reason: %s", st.Reason)
	if st.Phase != PhaseFailed || !strings.Contains(st.Reason, wanRepo) || !strings.Contains(st.Reason, "accept the license on huggingface.co") ||
		!strings.Contains(st.Reason, "HF_TOKEN") || strings.ContainsAny(st.Reason, "\r\n") {
		t.Errorf("phase %s, reason %q", st.Phase, st.Reason)
	}
	if st.PID != 0 || st.ExitCode != nil {
		t.Errorf("the trainer ran: pid %d", st.PID)
	}
	if _, err := os.Stat(filepath.Join(jd, LogFile)); err == nil {
		t.Errorf("train.log exists: the trainer started")
	}
	b, _ := os.ReadFile(filepath.Join(jd, StateFile))
	for _, leak := range [][]byte{b, log.Bytes()} {
		if bytes.Contains(leak, []byte(tok)) {
			t.Errorf("the token leaked: %s", leak)
		}
	}
}

// A supervisor stopped mid-pull (SIGTERM) leaves the job "downloading model"; the next
// one continues the pull from the chunks already verified instead of starting over.
func TestSupervisePrepullResumes(t *testing.T) {
	srv := hftest.Start(t, hftest.Options{})
	files := wanFiles()
	const big = "transformer/diffusion_pytorch_model.safetensors"
	data := bytes.Repeat([]byte("0123456789abcdef"), 20<<16) // 20 MiB: more than one 16 MiB chunk
	for i := range files {
		if files[i].Path == big {
			files[i].Data = data
		}
	}
	srv.AddRepo(hftest.Repo{ID: wanRepo, Files: files})
	srv.SlowAt(big, -1, 4*time.Millisecond)
	jd := pullJob(t, srv, filepath.Join(t.TempDir(), "hf"), "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log bytes.Buffer
	errc := make(chan error, 1)
	go func() { errc <- Supervise(ctx, jd, &log) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := ReadState(jd); err == nil && st.Download != nil && st.Download.Done > 14<<20 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err == nil {
		t.Fatalf("supervise: no error after the cancel\n%s", log.String())
	}
	st, err := ReadState(jd)
	if err != nil || st.Phase != PhaseDownloading || st.PID != 0 {
		t.Fatalf("after the interruption: %+v %v", st, err)
	}
	first := srv.CDNBytes(big)
	if first == 0 || first >= int64(len(data)) {
		t.Fatalf("first run fetched %d of %d bytes", first, len(data))
	}
	srv.SlowAt(big, -1, 0)
	st = supervise(t, jd)
	if st.Phase != PhaseDone || st.Download == nil || !st.Download.Ended {
		t.Fatalf("second run: %s (%s)", st.Phase, st.Reason)
	}
	again := srv.CDNBytes(big) - first
	t.Logf("first run %d bytes, second %d, file %d", first, again, len(data))
	if again >= int64(len(data)) {
		t.Errorf("the second run fetched the whole file again (%d bytes)", again)
	}
}

// `train stop` while the model downloads ends the job "stopped" without a trainer.
func TestSupervisePrepullStop(t *testing.T) {
	srv := hftest.Start(t, hftest.Options{})
	srv.AddRepo(hftest.Repo{ID: wanRepo, Files: wanFiles()})
	srv.SlowAt("transformer/diffusion_pytorch_model.safetensors", -1, 100*time.Millisecond) // ~4 s
	jd := pullJob(t, srv, filepath.Join(t.TempDir(), "hf"), "")
	go func() {
		for i := 0; i < 500; i++ {
			if st, err := ReadState(jd); err == nil && st.Phase == PhaseDownloading {
				Control(context.Background(), jd, CtlStop)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t0 := time.Now()
	st := supervise(t, jd)
	if st.Phase != PhaseStopped || st.PID != 0 || !strings.Contains(st.Reason, "downloading") {
		t.Errorf("phase %s (%s), pid %d", st.Phase, st.Reason, st.PID)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("stop took %s", d)
	}
}
