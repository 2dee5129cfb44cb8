// Package traintest is what the end-to-end tests of `scopectl train` share: a real
// sshd on 127.0.0.1 playing the GPU machine, an ai-toolkit stand-in checkout there,
// and a laptop (HOME, data dir) running the scopectl binary. Imported by tests only.
package traintest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
)

// World is one laptop (HOME, data dir) and one machine (sshd, workspace, checkout).
type World struct {
	T                      *testing.T
	Bin, Home, Data, WS    string
	Host, Checkout, Config string
	Env                    []string
	// Hub is a fake Hugging Face Hub holding a tiny repo under the config's base model
	// id; RunArgs points the job at it (HF_ENDPOINT), so the pre-pull runs for real.
	Hub *hftest.Server
}

// BaseModel is the repo aitktest.Config names as model.name_or_path.
const BaseModel = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"

// HubFiles is a tiny Diffusers repo laid out like Wan2.1's.
func HubFiles() []hftest.File {
	return []hftest.File{
		{Path: "model_index.json", Data: []byte(`{"_class_name":"WanPipeline"}`)},
		{Path: "scheduler/scheduler_config.json", Data: []byte(`{}`)},
		{Path: "transformer/config.json", Data: []byte(`{}`)},
		{Path: "transformer/diffusion_pytorch_model.safetensors", Data: bytes.Repeat([]byte("w"), 256<<10), LFS: true},
		{Path: "transformer/diffusion_pytorch_model.bin", Data: []byte("duplicate"), LFS: true},
		{Path: "vae/config.json", Data: []byte(`{}`)},
		{Path: "vae/diffusion_pytorch_model.safetensors", Data: []byte("vae"), LFS: true},
	}
}

func NewWorld(t *testing.T, c aitktest.Config) *World {
	w := &World{T: t, Bin: testkit.Scopectl(t), Hub: hftest.Start(t, hftest.Options{})}
	w.Hub.AddRepo(hftest.Repo{ID: BaseModel, Files: HubFiles()})
	root := t.TempDir()
	w.Home, w.Data, w.WS = filepath.Join(root, "home"), filepath.Join(root, "data"), filepath.Join(root, "ws")
	os.MkdirAll(w.Home, 0o700)
	port := testkit.StartSSHD(t, w.Home, "")
	u, _ := user.Current()
	w.Host = fmt.Sprintf("ssh://%s@127.0.0.1:%d", u.Username, port)
	w.Checkout = filepath.Join(root, "aitk")
	aitktest.InstallCheckout(t, w.Checkout)
	if c.Dataset == "" {
		c.Dataset = aitktest.Dataset(t, 3, false)
	}
	c.TrainingFolder = "output"
	w.Config = filepath.Join(root, "job.json")
	os.WriteFile(w.Config, []byte(c.JSON()), 0o600)
	w.Env = append(os.Environ(), "HOME="+w.Home, "SCOPECTL_DATA_DIR="+w.Data, "XDG_CONFIG_HOME="+filepath.Join(root, "xdg"), "HF_TOKEN=")
	return w
}

// Scopectl runs the CLI and returns stdout; it fails the test on a non-zero exit
// unless allowFail.
func (w *World) Scopectl(args ...string) string {
	w.T.Helper()
	cmd := exec.Command(w.Bin, args...)
	cmd.Env = w.Env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		w.T.Fatalf("scopectl %s: %v\n%s\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func (w *World) RunArgs(extra ...string) []string {
	return append([]string{"train", "run", w.Config, "--host", w.Host, "--aitk-dir", w.Checkout, "--workspace", w.WS,
		"--force", "--compress", "off", "--poll", "100ms", "--stop-grace", "3s", "--kill-grace", "2s", "--interval", "300ms", "--json",
		"--env", "HF_ENDPOINT=" + w.Hub.URL()}, extra...)
}

func (w *World) Status(id string) train.StatusResult {
	w.T.Helper()
	var st train.StatusResult
	if err := json.Unmarshal([]byte(w.Scopectl("train", "status", id, "--json")), &st); err != nil {
		w.T.Fatal(err)
	}
	return st
}

func (w *World) WaitFor(id string, what string, ok func(*train.State) bool) *train.State {
	w.T.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		st := w.Status(id)
		if ok(st.State) {
			return st.State
		}
		if train.Terminal(st.State.Phase) {
			w.T.Fatalf("job ended (%s: %s) while waiting for %s", st.State.Phase, st.State.Reason, what)
		}
		time.Sleep(time.Second)
	}
	w.T.Fatalf("timed out waiting for %s", what)
	return nil
}

func DetachJob(t *testing.T, w *World, extra ...string) string {
	var res train.RunResult
	if err := json.Unmarshal([]byte(w.Scopectl(append(w.RunArgs(extra...), "--detach")...)), &res); err != nil {
		t.Fatal(err)
	}
	if res.Job.ID == "" {
		t.Fatalf("no job id: %+v", res)
	}
	return res.Job.ID
}

// CheckLibrary checks that every checkpoint of the job is in the library with its lineage.
func CheckLibrary(t *testing.T, w *World, id string, want int) {
	t.Helper()
	lib, err := library.Open(w.Data)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	ts := lib.Store.(store.TrainStore)
	job, err := ts.GetTrainJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if job.ConfigSHA == "" || job.DatasetSHA == "" || job.BaseModel == "" {
		t.Errorf("job lineage missing: %+v", job)
	}
	cps, err := ts.ListTrainCheckpoints(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) < want {
		t.Fatalf("%d checkpoints collected, want ≥ %d: %+v", len(cps), want, cps)
	}
	for _, c := range cps {
		e, err := lib.Store.GetBySHA(context.Background(), c.SHA256)
		if err != nil {
			t.Fatalf("%s not in the library: %v", c.File, err)
		}
		if err := lib.Check(context.Background(), e); err != nil {
			t.Errorf("%s: %v", e.Name, err)
		}
		found := false
		for _, o := range e.Origins {
			if o.Kind == "training" && o.Job == id && o.Step == int64(c.Step) && o.BaseModel == job.BaseModel {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no training origin for job %s step %d: %+v", e.Name, id, c.Step, e.Origins)
		}
		if c.Loss == nil {
			t.Errorf("%s: no loss", c.File)
		}
	}
}

// StartScope runs the Scope stand-in on 127.0.0.1 with its LoRA folder at loraDir,
// waits for it to answer, and returns its URL.
func StartScope(t *testing.T, loraDir string, args ...string) string {
	t.Helper()
	stub := testkit.GoBuild(t, testkit.Build{Pkg: "./internal/scope/scopestub", Static: true})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(stub, append([]string{"--host", "127.0.0.1", "--port", strconv.Itoa(port)}, args...)...)
	cmd.Env = append(os.Environ(), "DAYDREAM_SCOPE_LORA_DIR="+loraDir)
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	u := "http://127.0.0.1:" + strconv.Itoa(port)
	sc := &scope.Client{Base: u}
	if _, err := sc.WaitHealthy(context.Background(), 20*time.Second); err != nil {
		t.Fatalf("Scope stand-in: %v", err)
	}
	return u
}

// ScopectlCode runs the CLI and returns stdout, stderr and the exit code.
func (w *World) ScopectlCode(args ...string) (string, string, int) {
	w.T.Helper()
	return testkit.RunCode(w.T, w.Bin, w.Env, args...)
}
