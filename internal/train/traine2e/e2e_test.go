// Package traine2e runs `scopectl train` end to end over a real sshd with the
// ai-toolkit stand-in in a checkout on the machine.
package traine2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
	. "github.com/daydreamlive/scopectl/internal/train/traintest"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// The whole life over SSH, with the laptop side killed (-9) mid-run and reattached.
func TestTrainRunKillReattachCollect(t *testing.T) {
	t.Parallel()
	w := NewWorld(t, aitktest.Config{Name: "e2elora", Steps: 60, SaveEvery: 10, Keep: 1, SampleEvery: 20})
	w.Env = append(w.Env, "SCOPECTL_TEST=1")
	args := append(w.RunArgs("--env", aitktest.EnvStepMS+"=80"), "")
	args = args[:len(args)-1]
	cmd := exec.Command(w.Bin, args...)
	cmd.Env = w.Env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the laptop side once a checkpoint has been staged on the machine.
	var id string
	deadline := time.Now().Add(120 * time.Second)
	for id == "" && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		var jobs []store.TrainJob
		if json.Unmarshal([]byte(w.Scopectl("train", "ls", "--json")), &jobs) == nil && len(jobs) == 1 {
			id = jobs[0].ID
		}
	}
	if id == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no job recorded\n%s\n%s", out.String(), errb.String())
	}
	t.Logf("%v: job %s recorded", time.Since(t0), id)
	w.WaitFor(id, "a staged checkpoint", func(st *train.State) bool { return len(st.Checkpoints) > 0 })
	t.Logf("%v: a checkpoint staged; kill -9", time.Since(t0))
	cmd.Process.Kill()
	cmd.Wait()
	// Reattach: watch to the end.
	var res train.CollectResult
	if err := json.Unmarshal([]byte(w.Scopectl("train", "watch", id, "--interval", "300ms", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: watch returned", time.Since(t0))
	st := w.Status(id)
	if st.State.Phase != train.PhaseDone {
		t.Fatalf("phase %s (%s)", st.State.Phase, st.State.Reason)
	}
	if len(st.State.Failures) > 0 {
		t.Errorf("failures: %v", st.State.Failures)
	}
	// The base model was pulled into the machine's HF cache before the trainer started.
	if d := st.State.Download; d == nil || !d.Ended || d.Done != d.Total || d.Repo != BaseModel {
		t.Errorf("pre-pull: %+v", d)
	}
	if _, err := os.Stat(filepath.Join(w.WS, "hf", "hub", "models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers", "refs", "main")); err != nil {
		t.Errorf("pre-pull: %v", err)
	}
	// 5 step saves and the final one; with keep 1 only the newest stays on the machine,
	// the staged copies carry the rest.
	CheckLibrary(t, w, id, 6)
	logs := w.Scopectl("train", "logs", id)
	if !strings.Contains(logs, "Saved checkpoint to") {
		t.Errorf("train logs lacks the checkpoint lines:\n%s", logs)
	}
	// Collect again: nothing new.
	var again train.CollectResult
	json.Unmarshal([]byte(w.Scopectl("train", "collect", id, "--json")), &again)
	for _, c := range again.Checkpoints {
		if c.New {
			t.Errorf("collected twice: %s", c.File)
		}
	}
}

// Stop during a save waits for the save; resume continues from the newest checkpoint.
func TestTrainStopDuringSaveAndResume(t *testing.T) {
	t.Parallel()
	w := NewWorld(t, aitktest.Config{Name: "stoplora", Steps: 120, SaveEvery: 10, Keep: 2})
	id := DetachJob(t, w, "--env", aitktest.EnvStepMS+"=50", "--env", aitktest.EnvSaveMS+"=2500")
	w.WaitFor(id, "saving", func(st *train.State) bool { return st.Phase == train.PhaseSaving })
	w.Scopectl("train", "stop", id, "--json")
	deadline := time.Now().Add(60 * time.Second)
	var s train.StatusResult
	for time.Now().Before(deadline) {
		s = w.Status(id)
		if train.Terminal(s.State.Phase) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if s.State.Phase != train.PhaseStopped || s.State.Escalated == "SIGKILL" {
		t.Fatalf("phase %s (%s), escalated %q", s.State.Phase, s.State.Reason, s.State.Escalated)
	}
	if len(s.State.Checkpoints) == 0 || len(s.State.Failures) > 0 {
		t.Fatalf("the save under way at the stop was not staged: %+v %v", s.State.Checkpoints, s.State.Failures)
	}
	last := s.State.Checkpoints[len(s.State.Checkpoints)-1].Step
	var r train.StatusResult
	if err := json.Unmarshal([]byte(w.Scopectl("train", "resume", id, "--detach", "--json")), &r); err != nil {
		t.Fatal(err)
	}
	var res train.CollectResult
	json.Unmarshal([]byte(w.Scopectl("train", "watch", id, "--interval", "300ms", "--json")), &res)
	s = w.Status(id)
	if s.State.Phase != train.PhaseDone || s.State.Run != 2 || s.State.ResumedAt != last {
		t.Fatalf("after resume: phase %s (%s), run %d, resumed from step %d, want %d (the newest staged)",
			s.State.Phase, s.State.Reason, s.State.Run, s.State.ResumedAt, last)
	}
	CheckLibrary(t, w, id, 1)
}
