// Package aitktest gives tests an ai-toolkit to drive without a GPU: the
// stand-in program in ./standin, which is invoked exactly as `python run.py
// CONFIG [-r] [-n NAME] [-l LOG]` and writes what ai-toolkit 0.12.26 writes
// (checkpoints, samples, loss_log.db, the job DB row, console lines, exit
// codes), built once per test process, installed as a fake checkout or
// packaged as a FROM-scratch image laid out like ostris/aitoolkit.
//
// The stand-in is an independent implementation of ai-toolkit's behaviour,
// written from its source; it does not import internal/aitk, so tests of
// internal/aitk against it check both.
//
// Knobs are environment variables of the stand-in process (see the Env*
// constants). It is imported by tests only, never by the product.
package aitktest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/testkit"

	_ "modernc.org/sqlite"
)

// Environment knobs of the stand-in.
const (
	EnvStepMS    = "STANDIN_STEP_MS"    // time per training step (default 20)
	EnvSaveMS    = "STANDIN_SAVE_MS"    // time to write one checkpoint, in 8 chunks (default 40)
	EnvCkptBytes = "STANDIN_CKPT_BYTES" // approximate tensor bytes per checkpoint (default 1 MiB)
	EnvLoadMS    = "STANDIN_LOAD_MS"    // time per model-loading phase (default 2)
	EnvSampleMS  = "STANDIN_SAMPLE_MS"  // time per sample image (default 5)
	EnvOOMAt     = "STANDIN_OOM_AT"     // CUDA OOM from this step on; the 4th in a row aborts (exit 1)
	EnvOOMTimes  = "STANDIN_OOM_TIMES"  // only this many consecutive OOMs (default: unlimited)
	EnvFailAt    = "STANDIN_FAIL_AT"    // RuntimeError traceback at this step (exit 1)
	EnvHangSave  = "STANDIN_HANG_SAVE"  // 1: hang forever half way through the first checkpoint
	EnvNoLossLog = "STANDIN_NO_LOSSLOG" // 1: an image older than loss_log.db
	EnvOldDB     = "STANDIN_OLD_DB"     // 1: a trainer older than the save_now/sample_now columns
)

// Pkg is the stand-in's package path relative to the module root.
const Pkg = "./internal/aitk/aitktest/standin"

// AppDir is where the official image keeps the ai-toolkit checkout.
const AppDir = "/app/ai-toolkit"

// Build builds the stand-in (static) once per test process and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	return testkit.GoBuild(t, testkit.Build{Pkg: Pkg, Static: true})
}

// InstallCheckout makes dir a fake ai-toolkit checkout: an empty run.py, and
// the stand-in as bin/python and bin/python3 and as .venv/bin/python (where
// the ai-toolkit UI looks first). It returns the bin folder, to put first on
// PATH; `python run.py CONFIG` run in dir then runs the stand-in.
func InstallCheckout(t testing.TB, dir string) string {
	t.Helper()
	bin := Build(t)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", ".venv/bin", "config"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "run.py"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bin/python", "bin/python3", ".venv/bin/python"} {
		if err := os.WriteFile(filepath.Join(dir, p), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "bin")
}

// Image builds a FROM-scratch image laid out like ostris/aitoolkit (the
// stand-in as /usr/bin/python, /usr/bin/python3 and /usr/local/bin/python,
// an empty /app/ai-toolkit/run.py, WORKDIR /app/ai-toolkit, PATH set, a
// writable /tmp), pushes it to reg and returns its reference. The image has
// no ENTRYPOINT: run it with a command, e.g. `python run.py /cfg.yaml`. Local
// copies are removed when the test ends.
func Image(t testing.TB, reg *deploytest.Registry) string {
	t.Helper()
	bin := Build(t)
	dir := t.TempDir()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "python"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "run.py"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o777); err != nil {
		t.Fatal(err)
	}
	df := `FROM scratch
COPY python /usr/bin/python
COPY python /usr/bin/python3
COPY python /usr/local/bin/python
COPY run.py /app/ai-toolkit/run.py
COPY tmp /tmp
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONUNBUFFERED=1
WORKDIR /app/ai-toolkit
CMD ["python", "run.py"]
`
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ref := reg.Addr + "/aitk-standin:" + deploytest.RandHex(6)
	out, err := deploytest.Docker(ctx, "build", "--quiet", "--tag", ref, dir)
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		deploytest.Docker(ctx, "image", "rm", "--force", ref)
	})
	if out, err := deploytest.Docker(ctx, "push", "--quiet", ref); err != nil {
		t.Fatalf("docker push %s: %v\n%s", ref, err, out)
	}
	return ref
}

// JobTableSQL is a Job table with the columns DiffusionTrainer uses (the
// minimal scopectl-owned control schema). Old drops save_now and sample_now,
// like a UI database from before 2026-05-26.
func JobTableSQL(old bool) string {
	cols := []string{"id TEXT PRIMARY KEY", "name TEXT", "status TEXT NOT NULL DEFAULT 'stopped'", "info TEXT NOT NULL DEFAULT ''",
		"step INTEGER NOT NULL DEFAULT 0", "speed_string TEXT NOT NULL DEFAULT ''", "stop BOOLEAN NOT NULL DEFAULT 0",
		"return_to_queue BOOLEAN NOT NULL DEFAULT 0"}
	if !old {
		cols = append(cols, "save_now BOOLEAN NOT NULL DEFAULT 0", "sample_now BOOLEAN NOT NULL DEFAULT 0")
	}
	return "CREATE TABLE Job (" + strings.Join(cols, ", ") + ")"
}

// CreateJobDB creates the SQLite file at path with a Job table (see
// JobTableSQL) and one row with id, status running, as the UI leaves it when
// it starts a job.
func CreateJobDB(t testing.TB, path, id string, old bool) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(JobTableSQL(old)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO Job (id, name, status, info) VALUES (?, ?, 'running', 'Starting job...')", id, id); err != nil {
		t.Fatal(err)
	}
}

// JobRow is the part of a Job row the trainer writes.
type JobRow struct {
	Status, Info, SpeedString string
	Step                      int
}

// ReadJob reads the Job row id from the database at path.
func ReadJob(path, id string) (JobRow, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return JobRow{}, err
	}
	defer db.Close()
	var r JobRow
	err = db.QueryRow("SELECT status, info, step, speed_string FROM Job WHERE id = ?", id).Scan(&r.Status, &r.Info, &r.Step, &r.SpeedString)
	return r, err
}

// SetJobFlag sets one control column (stop, return_to_queue, save_now,
// sample_now) of the Job row id to 1, as the UI does.
func SetJobFlag(path, id, col string) error {
	switch col {
	case "stop", "return_to_queue", "save_now", "sample_now":
	default:
		return fmt.Errorf("aitktest: %q is not a control column", col)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec("UPDATE Job SET "+col+" = 1 WHERE id = ?", id)
	return err
}

// Config is a small Wan2.1 LoRA job for the stand-in, rendered by JSON: a
// diffusion_trainer process writing under TrainingFolder, with the UI's
// logging (use_ui_logger, log_every 1).
type Config struct {
	Name           string
	TrainingFolder string
	Dataset        string // folder_path (must hold media files)
	Steps          int
	SaveEvery      int
	Keep           int // max_step_saves_to_keep
	SampleEvery    int // 0: disable_sampling
	Prompts        []string
	NumFrames      int    // sample and dataset num_frames (default 1)
	DBPath         string // sqlite_db_path ("" leaves the default ./aitk_db.db)
	Rank           int    // default 16
}

// JSON renders c as an ai-toolkit job config.
func (c Config) JSON() string {
	if c.Rank == 0 {
		c.Rank = 16
	}
	if c.NumFrames == 0 {
		c.NumFrames = 1
	}
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	prompts := make([]string, len(c.Prompts))
	for i, p := range c.Prompts {
		prompts[i] = q(p)
	}
	db := ""
	if c.DBPath != "" {
		db = `"sqlite_db_path": ` + q(c.DBPath) + ","
	}
	disable := c.SampleEvery == 0
	se := c.SampleEvery
	if se == 0 {
		se = 1000
	}
	return fmt.Sprintf(`{"job": "extension", "config": {"name": %s, "process": [{
  "type": "diffusion_trainer", "training_folder": %s, %s "performance_log_every": 5,
  "logging": {"log_every": 1, "use_ui_logger": true},
  "network": {"type": "lora", "linear": %d, "linear_alpha": %d},
  "save": {"dtype": "bf16", "save_every": %d, "max_step_saves_to_keep": %d},
  "datasets": [{"folder_path": %s, "caption_ext": "txt", "cache_latents_to_disk": true, "num_frames": %d, "resolution": [512]}],
  "train": {"batch_size": 1, "steps": %d, "lr": 0.0001, "disable_sampling": %t},
  "model": {"name_or_path": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "arch": "wan21:1b", "quantize": false},
  "sample": {"sample_every": %d, "width": 64, "height": 64, "num_frames": %d, "fps": 16, "prompts": [%s]}
}]}, "meta": {"name": "[name]", "version": "1.0"}}`,
		q(c.Name), q(c.TrainingFolder), db, c.Rank, c.Rank, c.SaveEvery, c.Keep, q(c.Dataset), c.NumFrames,
		c.Steps, disable, se, c.NumFrames, strings.Join(prompts, ", "))
}

// Dataset makes a folder of n tiny media files with captions (video names
// when video) and returns it. The stand-in only lists them.
func Dataset(t testing.TB, n int, video bool) string {
	t.Helper()
	dir := t.TempDir()
	ext := ".jpg"
	if video {
		ext = ".mp4"
	}
	for i := 0; i < n; i++ {
		base := filepath.Join(dir, fmt.Sprintf("clip%02d", i))
		if err := os.WriteFile(base+ext, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(base+".txt", []byte("a clip"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
