package train

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// job makes a job folder for the stand-in with extra environment.
func job(t *testing.T, c aitktest.Config, env ...string) (string, *Spec) {
	t.Helper()
	dir := t.TempDir()
	checkout := filepath.Join(dir, "aitk")
	bin := aitktest.InstallCheckout(t, checkout)
	if c.TrainingFolder == "" {
		c.TrainingFolder = filepath.Join(dir, "out")
	}
	if c.Dataset == "" {
		c.Dataset = aitktest.Dataset(t, 3, false)
	}
	jd := filepath.Join(dir, "job")
	os.MkdirAll(jd, 0o700)
	os.WriteFile(filepath.Join(jd, "config.json"), []byte(c.JSON()), 0o600)
	s := &Spec{Version: specVersion, JobID: "job-1", Name: c.Name, Config: filepath.Join(jd, "config.json"),
		SaveDir: filepath.Join(c.TrainingFolder, c.Name), Workdir: checkout, Command: []string{"python", "run.py", "{config}"},
		Env: append([]string{"PATH=" + bin + ":" + os.Getenv("PATH")}, env...), TotalSteps: c.Steps, Keep: c.Keep,
		Poll: 100 * time.Millisecond, StopGrace: time.Second, KillGrace: time.Second}
	if err := writeJSON(filepath.Join(jd, SpecFile), s, 0o600); err != nil {
		t.Fatal(err)
	}
	return jd, s
}

func supervise(t *testing.T, jd string) *State {
	t.Helper()
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Supervise(ctx, jd, &log); err != nil {
		t.Fatalf("supervise: %v\n%s", err, log.String())
	}
	st, err := ReadState(jd)
	if err != nil {
		t.Fatal(err)
	}
	tl, _ := os.ReadFile(filepath.Join(jd, LogFile))
	if len(tl) > 3000 {
		tl = tl[len(tl)-3000:]
	}
	t.Logf("supervisor log:\n%s\ntrain.log:\n%s", log.String(), tl)
	return st
}

func checkStaged(t *testing.T, jd string, st *State) {
	t.Helper()
	for _, c := range st.Checkpoints {
		p := filepath.Join(jd, CollectDir, c.File)
		if err := CheckFile(p); err != nil {
			t.Errorf("staged %s: %v", c.File, err)
		}
		sum, n, err := FileSHA256(p)
		if err != nil || sum != c.SHA256 || n != c.Size {
			t.Errorf("staged %s: sha256 %s size %d, state says %s %d (%v)", c.File, sum, n, c.SHA256, c.Size, err)
		}
	}
}

func TestSuperviseRunToEnd(t *testing.T) {
	jd, _ := job(t, aitktest.Config{Name: "tlora", Steps: 30, SaveEvery: 10, Keep: 1, SampleEvery: 10})
	st := supervise(t, jd)
	if st.Phase != PhaseDone || st.ExitCode == nil || *st.ExitCode != 0 {
		t.Fatalf("phase %s exit %v reason %q", st.Phase, st.ExitCode, st.Reason)
	}
	if len(st.Failures) > 0 {
		t.Errorf("failures: %v", st.Failures)
	}
	steps := map[int]bool{}
	final := false
	for _, c := range st.Checkpoints {
		steps[c.Step] = true
		final = final || c.Final
		if c.Loss == nil {
			t.Errorf("%s: no loss", c.File)
		}
	}
	if !steps[10] || !steps[20] || !final {
		t.Errorf("checkpoints %+v", st.Checkpoints)
	}
	checkStaged(t, jd, st)
	if st.Step != 30 || st.Loss == nil {
		t.Errorf("step %d loss %v", st.Step, st.Loss)
	}
}

func TestSuperviseFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want string
	}{
		{aitktest.EnvOOMAt + "=5", "CUDA out of memory"},
		{aitktest.EnvFailAt + "=5", "Error running job: CUDA error"},
	} {
		jd, _ := job(t, aitktest.Config{Name: "tlora", Steps: 30, SaveEvery: 10, Keep: 2}, tc.env)
		st := supervise(t, jd)
		if st.Phase != PhaseFailed || !strings.Contains(st.Reason, tc.want) {
			t.Errorf("%s: phase %s reason %q, want %q", tc.env, st.Phase, st.Reason, tc.want)
		}
	}
}

// A save that never completes is never staged, the stop waits for it (never SIGINT
// while saving) and then escalates; the resume moves the broken save aside.
func TestSuperviseHalfWrittenNeverStaged(t *testing.T) {
	jd, spec := job(t, aitktest.Config{Name: "tlora", Steps: 40, SaveEvery: 10, Keep: 2}, aitktest.EnvHangSave+"=1")
	go func() {
		for i := 0; i < 200; i++ {
			time.Sleep(50 * time.Millisecond)
			if st, err := ReadState(jd); err == nil && st.Phase == PhaseSaving {
				break
			}
		}
		time.Sleep(300 * time.Millisecond)
		Control(context.Background(), jd, CtlStop)
	}()
	st := supervise(t, jd)
	if st.Phase != PhaseStopped || len(st.Checkpoints) != 0 {
		t.Fatalf("phase %s (%s), checkpoints %+v", st.Phase, st.Reason, st.Checkpoints)
	}
	if st.Escalated != "SIGKILL" {
		t.Errorf("escalated %q", st.Escalated)
	}
	ents, _ := os.ReadDir(spec.SaveDir)
	var half string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".safetensors") {
			half = e.Name()
		}
	}
	if half == "" || CheckFile(filepath.Join(spec.SaveDir, half)) == nil {
		t.Fatalf("expected a half-written save in %v", ents)
	}
	// Resume without the hang: the broken save is moved aside and training restarts.
	os.WriteFile(filepath.Join(jd, SpecFile), bytes.ReplaceAll(must(os.ReadFile(filepath.Join(jd, SpecFile))), []byte(aitktest.EnvHangSave+"=1"), []byte("X=1")), 0o600)
	os.Rename(filepath.Join(jd, StateFile), filepath.Join(jd, prevStateFile))
	st = supervise(t, jd)
	if st.Phase != PhaseDone || st.Run != 2 {
		t.Fatalf("resume: phase %s run %d reason %q", st.Phase, st.Run, st.Reason)
	}
	if _, err := os.Stat(filepath.Join(jd, "broken", half)); err != nil {
		t.Errorf("broken save not moved aside: %v", err)
	}
	checkStaged(t, jd, st)
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// A supervisor that dies leaves the trainer running; the next one takes it over.
func TestSuperviseAdoptsRunningTrainer(t *testing.T) {
	jd, _ := job(t, aitktest.Config{Name: "tlora", Steps: 60, SaveEvery: 10, Keep: 1}, aitktest.EnvStepMS+"=60")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Supervise(ctx, jd, nil) }()
	for i := 0; i < 300; i++ {
		time.Sleep(50 * time.Millisecond)
		if st, err := ReadState(jd); err == nil && len(st.Checkpoints) > 0 {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := supervise(t, jd)
	if !st.Adopted || st.Phase != PhaseDone || st.Run != 1 {
		t.Fatalf("adopted %v phase %s (%s) run %d", st.Adopted, st.Phase, st.Reason, st.Run)
	}
	if len(st.Failures) > 0 || len(st.Checkpoints) < 6 {
		t.Errorf("checkpoints %d failures %v", len(st.Checkpoints), st.Failures)
	}
	checkStaged(t, jd, st)
}

// A stop while the supervisor is gone and the trainer runs on: supervise-ctl says the
// trainer is an orphan, and the supervisor started for it takes it over and stops it.
func TestStopOrphanTrainer(t *testing.T) {
	jd, _ := job(t, aitktest.Config{Name: "tlora", Steps: 1000, SaveEvery: 10, Keep: 2}, aitktest.EnvStepMS+"=60")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Supervise(ctx, jd, nil) }()
	for i := 0; i < 300; i++ {
		time.Sleep(50 * time.Millisecond)
		if st, err := ReadState(jd); err == nil && len(st.Checkpoints) > 0 {
			break
		}
	}
	cancel() // the supervisor ends; its trainer does not
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := Control(context.Background(), jd, CtlStop)
	if err != nil {
		t.Fatal(err)
	}
	if st.SupervisorAlive == nil || *st.SupervisorAlive || !st.Orphan {
		t.Fatalf("after the supervisor's end: alive %v orphan %v (%s)", st.SupervisorAlive, st.Orphan, st.Info)
	}
	st = supervise(t, jd)
	if !st.Adopted || st.Phase != PhaseStopped {
		t.Fatalf("adopted %v phase %s (%s)", st.Adopted, st.Phase, st.Reason)
	}
	if st, _ := Control(context.Background(), jd, CtlStatus); st.Orphan {
		t.Fatalf("still an orphan after the stop: %+v", st)
	}
	checkStaged(t, jd, st)
}
