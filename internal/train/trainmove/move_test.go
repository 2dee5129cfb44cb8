// Package trainmove runs `scopectl train resume JOB --host …` end to end: a stopped job
// continued on another machine (another workspace with nothing of the job) from its
// newest checkpoint in the library.
package trainmove

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
	. "github.com/daydreamlive/scopectl/internal/train/traintest"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func TestResumeOnAnotherMachine(t *testing.T) {
	w := NewWorld(t, aitktest.Config{Name: "movelora", Steps: 200, SaveEvery: 10, Keep: 2})
	id := DetachJob(t, w, "--env", aitktest.EnvStepMS+"=100")
	w.WaitFor(id, "a staged checkpoint", func(st *train.State) bool { return len(st.Checkpoints) > 0 })
	w.Scopectl("train", "stop", id, "--json")
	deadline := time.Now().Add(90 * time.Second)
	var s train.StatusResult
	for time.Now().Before(deadline) {
		if s = w.Status(id); train.Terminal(s.State.Phase) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if s.State.Phase != train.PhaseStopped {
		t.Fatalf("phase %s (%s)", s.State.Phase, s.State.Reason)
	}
	var col train.CollectResult
	json.Unmarshal([]byte(w.Scopectl("train", "collect", id, "--json")), &col)
	last := 0
	for _, c := range col.Checkpoints {
		last = max(last, c.Step)
	}
	if last == 0 {
		t.Fatalf("nothing collected: %+v", col)
	}
	ws2 := filepath.Join(filepath.Dir(w.WS), "ws2")
	var rr train.RunResult
	out := w.Scopectl("train", "resume", id, "--host", w.Host, "--aitk-dir", w.Checkout, "--workspace", ws2, "--force", "--compress", "off",
		"--poll", "100ms", "--env", aitktest.EnvStepMS+"=20", "--env", "HF_ENDPOINT="+w.Hub.URL(), "--detach", "--json")
	if err := json.Unmarshal([]byte(out), &rr); err != nil || rr.Job.Workspace != ws2 {
		t.Fatalf("%v: %s", err, out)
	}
	json.Unmarshal([]byte(w.Scopectl("train", "watch", id, "--interval", "300ms", "--json")), &col)
	s = w.Status(id)
	if s.State.Phase != train.PhaseDone || s.State.ResumedAt != last {
		t.Fatalf("on the new machine: phase %s (%s), resumed from %d, want %d", s.State.Phase, s.State.Reason, s.State.ResumedAt, last)
	}
	CheckLibrary(t, w, id, 3)
	_ = rr
}
