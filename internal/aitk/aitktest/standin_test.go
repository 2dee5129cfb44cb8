package aitktest

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

type result struct {
	code           int
	stdout, stderr string
}

func start(t *testing.T, dir string, env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(Build(t), append([]string{"run.py"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &o, &e
}

func wait(t *testing.T, cmd *exec.Cmd, o, e *bytes.Buffer) result {
	t.Helper()
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, o.String(), e.String()}
}

func run(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	cmd, o, e := start(t, dir, env, args...)
	return wait(t, cmd, o, e)
}

func writeCfg(t *testing.T, dir string, c Config) string {
	t.Helper()
	p := filepath.Join(dir, "job.json")
	if err := os.WriteFile(p, []byte(c.JSON()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func stMeta(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(data)
	var h map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	var meta map[string]string
	json.Unmarshal(h["__metadata__"], &meta)
	var end int64
	for k, v := range h {
		if k == "__metadata__" {
			continue
		}
		if !regexp.MustCompile(`^diffusion_model\.blocks\.\d+\.(self_attn|cross_attn|ffn)\.[a-z0-9_]+\.lora_[AB]\.weight$`).MatchString(k) {
			t.Errorf("key %s is not a comfy Wan LoRA key", k)
		}
		var ti struct {
			Offsets [2]int64 `json:"data_offsets"`
		}
		json.Unmarshal(v, &ti)
		end = max(end, ti.Offsets[1])
	}
	if int64(len(data)) != 8+int64(n)+end {
		t.Errorf("%s: size %d, header says %d", path, len(data), 8+int64(n)+end)
	}
	return meta
}

func names(t *testing.T, dir, pattern string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	var out []string
	for _, p := range m {
		if b := filepath.Base(p); !strings.HasPrefix(b, ".") { // Python's glob skips dot files
			out = append(out, b)
		}
	}
	return out
}

func TestShortRun(t *testing.T) {
	dir := t.TempDir()
	ds := Dataset(t, 3, true)
	db := filepath.Join(dir, "control.db")
	CreateJobDB(t, db, "job1", false)
	cfg := writeCfg(t, dir, Config{Name: "lora1", TrainingFolder: filepath.Join(dir, "out"), Dataset: ds, Steps: 23,
		SaveEvery: 5, Keep: 2, SampleEvery: 10, Prompts: []string{"a", "b"}, NumFrames: 41, DBPath: db})
	r := run(t, dir, []string{"AITK_JOB_ID=job1", "STANDIN_STEP_MS=5"}, cfg, "-l", filepath.Join(dir, "logs", "log.txt"))
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	root := filepath.Join(dir, "out", "lora1")
	got := names(t, root, "*.safetensors")
	want := []string{"lora1.safetensors", "lora1_000000015.safetensors", "lora1_000000020.safetensors"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("checkpoints %v, want %v", got, want)
	}
	for _, s := range []string{"Saving at step 5", "Saved checkpoint to " + filepath.Join(root, "lora1_000000005.safetensors"),
		"Removing old save: " + filepath.Join(root, "lora1_000000005.safetensors"), "Saved checkpoint to " + filepath.Join(root, "lora1.safetensors"),
		"Using SQLite database at " + db, `Job ID: "job1"`, "Generating baseline samples before training"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q", s)
		}
	}
	if !regexp.MustCompile(`\rlora1: 100%\|##########\| 23/23 \[`).MatchString(r.stderr) {
		t.Errorf("no final progress line in stderr:\n%q", r.stderr)
	}
	m := stMeta(t, filepath.Join(root, "lora1_000000020.safetensors"))
	if !strings.HasPrefix(m["training_info"], `{"step": 20, "epoch": `) || m["ss_base_model_version"] != "wan_2.1" || m["name"] != "lora1" || m["format"] != "pt" {
		t.Errorf("metadata %v", m)
	}
	if m := stMeta(t, filepath.Join(root, "lora1.safetensors")); !strings.HasPrefix(m["training_info"], `{"step": 23,`) {
		t.Errorf("final metadata %v", m)
	}
	if _, err := os.Stat(filepath.Join(root, "optimizer.pt")); err != nil {
		t.Error(err)
	}
	// samples at 0, 10, 20 and the end (23), two prompts each, animated webp
	samples := names(t, filepath.Join(root, "samples"), "*")
	if len(samples) != 8 {
		t.Errorf("samples %v", samples)
	}
	re := regexp.MustCompile(`^\d{13}__0000000(00|10|20|23)_[01]\.webp$`)
	for _, s := range samples {
		if !re.MatchString(s) {
			t.Errorf("sample name %s", s)
		}
		th, err := os.ReadFile(filepath.Join(root, "samples", ".thumbs", s+".jpg"))
		if err != nil {
			t.Error(err)
		} else if _, err := jpeg.Decode(bytes.NewReader(th)); err != nil {
			t.Errorf("thumb %s: %v", s, err)
		}
	}
	if lc := names(t, filepath.Join(ds, "_latent_cache"), "*.safetensors"); len(lc) != 3 {
		t.Errorf("latent cache %v", lc)
	}
	// loss_log.db: steps 1..22 from the loop (the first step of a run is not logged)
	ldb, err := sql.Open("sqlite", filepath.Join(root, "loss_log.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ldb.Close()
	var n, lo, hi int
	if err := ldb.QueryRow("SELECT COUNT(*), MIN(step), MAX(step) FROM steps").Scan(&n, &lo, &hi); err != nil {
		t.Fatal(err)
	}
	if n != 22 || lo != 1 || hi != 22 {
		t.Errorf("loss_log steps: %d rows %d..%d", n, lo, hi)
	}
	var keys int
	ldb.QueryRow("SELECT COUNT(*) FROM metrics WHERE key IN ('loss/loss', 'learning_rate')").Scan(&keys)
	if keys != 44 {
		t.Errorf("metrics rows %d", keys)
	}
	row, err := ReadJob(db, "job1")
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != "completed" || row.Info != "Training completed" || row.Step != 23 || !strings.HasSuffix(row.SpeedString, "iter/sec") {
		t.Errorf("job row %+v", row)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "logs", "log.txt"))
	if !bytes.Contains(log, []byte("Saved checkpoint to")) || !bytes.Contains(log, []byte("lora1: 100%")) {
		t.Errorf("-l log lacks stdout or stderr")
	}
}

func waitStep(t *testing.T, db, id string, step int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := ReadJob(db, id); err == nil && r.Step >= step && r.Status == "running" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("step %d not reached", step)
}

func TestStopFlagAndResume(t *testing.T) {
	dir := t.TempDir()
	ds := Dataset(t, 2, false)
	db := filepath.Join(dir, "control.db")
	CreateJobDB(t, db, "j", false)
	c := Config{Name: "lora2", TrainingFolder: filepath.Join(dir, "out"), Dataset: ds, Steps: 1000, SaveEvery: 4, Keep: 10, DBPath: db}
	cfg := writeCfg(t, dir, c)
	cmd, o, e := start(t, dir, []string{"AITK_JOB_ID=j", "STANDIN_STEP_MS=10"}, cfg)
	waitStep(t, db, "j", 10)
	if err := SetJobFlag(db, "j", "stop"); err != nil {
		t.Fatal(err)
	}
	r := wait(t, cmd, o, e)
	if r.code != 1 || !strings.Contains(r.stdout, "Error running job: Job stopped") || !strings.Contains(r.stderr, "Exception: Job stopped") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	row, _ := ReadJob(db, "j")
	if row.Status != "stopped" || row.Info != "Job stopped" || row.Step%4 != 0 || row.Step < 8 {
		t.Errorf("row after stop %+v (step should be the last save)", row)
	}
	root := filepath.Join(dir, "out", "lora2")
	saves := names(t, root, "lora2_*.safetensors")
	if len(saves) < 2 {
		t.Fatalf("saves %v", saves)
	}
	// make an older save the newest by ctime (as a copy/restore does): resume takes it
	older := filepath.Join(root, saves[0])
	time.Sleep(20 * time.Millisecond)
	if err := os.Chmod(older, 0o600); err != nil {
		t.Fatal(err)
	}
	step := strings.TrimLeft(strings.TrimSuffix(strings.TrimPrefix(saves[0], "lora2_"), ".safetensors"), "0")
	c.Steps = 12
	c.DBPath = ""
	writeCfg(t, dir, c)
	r = run(t, dir, []string{"STANDIN_STEP_MS=2"}, cfg)
	if r.code != 0 {
		t.Fatalf("resume exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, s := range []string{"#### IMPORTANT RESUMING FROM " + older + " ####", "Found step " + step + " in metadata, starting from there",
		"Loading optimizer state from " + filepath.Join(root, "optimizer.pt")} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("resume stdout lacks %q\n%s", s, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "Using SQLite database") {
		t.Error("no DB configured: the default ./aitk_db.db does not exist")
	}
	if m := stMeta(t, filepath.Join(root, "lora2.safetensors")); !strings.HasPrefix(m["training_info"], `{"step": 12,`) {
		t.Errorf("final %v", m)
	}
}

func TestOOMAbort(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "c.db")
	CreateJobDB(t, db, "j", true) // an old table: STANDIN_OLD_DB does not poll the newer columns
	cfg := writeCfg(t, dir, Config{Name: "l3", TrainingFolder: filepath.Join(dir, "out"), Dataset: Dataset(t, 1, false), Steps: 50, SaveEvery: 2, Keep: 5, DBPath: db})
	r := run(t, dir, []string{"AITK_JOB_ID=j", "STANDIN_STEP_MS=1", "STANDIN_OOM_AT=5", "STANDIN_OLD_DB=1"}, cfg)
	if r.code != 1 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if n := strings.Count(r.stdout, "# OOM during training step, skipping batch"); n != 3 {
		t.Errorf("%d OOM boxes", n)
	}
	if !strings.Contains(r.stderr, "RuntimeError: OOM during training step 3 times in a row, aborting training") ||
		!strings.Contains(r.stdout, " - 1 failure") {
		t.Errorf("stdout\n%s\nstderr\n%s", r.stdout, r.stderr)
	}
	row, _ := ReadJob(db, "j")
	if row.Status != "error" || row.Info != "OOM during training step 3 times in a row, aborting training" || row.Step != 6 {
		// OOM at 5, 6, 7 (skipped; step 6 still saves), the 4th at 8 aborts; step = last save
		t.Errorf("row %+v", row)
	}
}

func TestNewTrainerOldTableFails(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "c.db")
	CreateJobDB(t, db, "j", true)
	cfg := writeCfg(t, dir, Config{Name: "l4", TrainingFolder: filepath.Join(dir, "out"), Dataset: Dataset(t, 1, false), Steps: 5, SaveEvery: 100, DBPath: db})
	r := run(t, dir, []string{"AITK_JOB_ID=j", "STANDIN_STEP_MS=1"}, cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "sqlite3.OperationalError: no such column: save_now") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestSIGINTAndHalfWrittenSave(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "c.db")
	CreateJobDB(t, db, "j", false)
	cfg := writeCfg(t, dir, Config{Name: "l5", TrainingFolder: filepath.Join(dir, "out"), Dataset: Dataset(t, 1, false), Steps: 1000, SaveEvery: 3, Keep: 5, DBPath: db})
	cmd, o, e := start(t, dir, []string{"AITK_JOB_ID=j", "STANDIN_STEP_MS=5"}, cfg)
	waitStep(t, db, "j", 7)
	cmd.Process.Signal(syscall.SIGINT)
	r := wait(t, cmd, o, e)
	if r.code != 0 || !strings.Contains(r.stdout, "Job stopped\n========================================") {
		t.Fatalf("SIGINT: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// The row keeps the last saved step: 6 when the signal lands at step 7 or 8, later
	// when a loaded machine delivers it later; always a save step with its checkpoint.
	if row, _ := ReadJob(db, "j"); row.Status != "stopped" || row.Step < 6 || row.Step%3 != 0 {
		t.Errorf("row %+v", row)
	} else if _, err := os.Stat(filepath.Join(dir, "out", "l5", fmt.Sprintf("l5_%09d.safetensors", row.Step))); err != nil {
		t.Errorf("row %+v names a step with no checkpoint: %v", row, err)
	}

	// a hang in the middle of the first checkpoint leaves it half written
	dir2 := t.TempDir()
	cfg = writeCfg(t, dir2, Config{Name: "l6", TrainingFolder: filepath.Join(dir2, "out"), Dataset: Dataset(t, 1, false), Steps: 10, SaveEvery: 2, Keep: 5})
	cmd, o, e = start(t, dir2, []string{"STANDIN_STEP_MS=1", "STANDIN_HANG_SAVE=1", "STANDIN_CKPT_BYTES=4000000"}, cfg)
	ck := filepath.Join(dir2, "out", "l6", "l6_000000002.safetensors")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if fi, err := os.Stat(ck); err == nil && fi.Size() > 1000000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("checkpoint not started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	r = wait(t, cmd, o, e)
	if r.code != -1 || strings.Contains(r.stdout, "Saved checkpoint") {
		t.Fatalf("SIGTERM: exit %d\n%s", r.code, r.stdout)
	}
	fi, _ := os.Stat(ck)
	if fi.Size() >= 4000000 {
		t.Errorf("checkpoint complete (%d bytes)", fi.Size())
	}
	// the re-run resumes from the torn file and fails like safetensors does
	r = run(t, dir2, []string{"STANDIN_STEP_MS=1"}, cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "safetensors_rust.SafetensorError: Error while deserializing header: MetadataIncompleteBuffer") {
		t.Errorf("torn resume: exit %d\n%s", r.code, r.stderr)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	r := run(t, dir, nil)
	if r.code != 2 || !strings.Contains(r.stderr, "the following arguments are required: config_file_list") {
		t.Errorf("no args: %+v", r)
	}
	r = run(t, dir, nil, "missing.yaml")
	if r.code != 1 || !strings.Contains(r.stdout, "Error running job: Could not find config file missing.yaml") ||
		!strings.Contains(r.stderr, "ValueError: Could not find config file missing.yaml") {
		t.Errorf("missing: %+v", r)
	}
	os.WriteFile(filepath.Join(dir, "env.yaml"), []byte("job: extension\nconfig:\n  name: ${NOPE_UNSET_VAR}\n"), 0o644)
	r = run(t, dir, nil, "env.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "ValueError: Environment variable NOPE_UNSET_VAR not set.") {
		t.Errorf("env: %+v", r)
	}
	os.WriteFile(filepath.Join(dir, "t.yaml"), []byte("job: extension\nconfig:\n  name: x\n  process:\n    - type: bogus\n"), 0o644)
	r = run(t, dir, nil, "t.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "ValueError: config file is invalid. Unknown process type: bogus") {
		t.Errorf("type: %+v", r)
	}
	r = run(t, dir, nil, "t.yaml", "-l", "log.txt")
	if r.code != 1 || !strings.Contains(r.stderr, "FileNotFoundError") {
		t.Errorf("-l without a folder: %+v", r)
	}
}

func TestInstallCheckout(t *testing.T) {
	dir := t.TempDir()
	bin := InstallCheckout(t, dir)
	cfg := writeCfg(t, dir, Config{Name: "l7", TrainingFolder: "output", Dataset: Dataset(t, 1, false), Steps: 3, SaveEvery: 100, Keep: 2})
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd := exec.Command("python", "run.py", cfg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "STANDIN_STEP_MS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "output", "l7", "l7.safetensors")); err != nil {
		t.Error(err)
	}
}
