// Package traine2e runs `scopectl train` end to end: a real sshd on 127.0.0.1 plays the
// GPU machine, the ai-toolkit stand-in plays ai-toolkit in a checkout there.
package traine2e

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
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// startSSHD runs OpenSSH's sshd on 127.0.0.1 with a client key and known_hosts in home.
func startSSHD(t *testing.T, home string) int {
	t.Helper()
	testkit.NeedFile(t, "/usr/sbin/sshd", "openssh-server")
	dir := t.TempDir()
	keygen := func(path string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	keygen(filepath.Join(dir, "host"))
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	keygen(filepath.Join(home, ".ssh", "id_ed25519"))
	pub, _ := os.ReadFile(filepath.Join(home, ".ssh", "id_ed25519.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nStrictModes no\nUsePAM no\n"+
		"PasswordAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
		port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "pid"))
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600)
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	hostPub, _ := os.ReadFile(filepath.Join(dir, "host.pub"))
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub)), 0o600)
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return port
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("sshd did not start")
	return 0
}

// world is one laptop (HOME, data dir) and one machine (sshd, workspace, checkout).
type world struct {
	t                      *testing.T
	bin, home, data, ws    string
	host, checkout, config string
	env                    []string
}

func newWorld(t *testing.T, c aitktest.Config) *world {
	w := &world{t: t, bin: testkit.Scopectl(t)}
	root := t.TempDir()
	w.home, w.data, w.ws = filepath.Join(root, "home"), filepath.Join(root, "data"), filepath.Join(root, "ws")
	os.MkdirAll(w.home, 0o700)
	port := startSSHD(t, w.home)
	u, _ := user.Current()
	w.host = fmt.Sprintf("ssh://%s@127.0.0.1:%d", u.Username, port)
	w.checkout = filepath.Join(root, "aitk")
	aitktest.InstallCheckout(t, w.checkout)
	if c.Dataset == "" {
		c.Dataset = aitktest.Dataset(t, 3, false)
	}
	c.TrainingFolder = "output"
	w.config = filepath.Join(root, "job.json")
	os.WriteFile(w.config, []byte(c.JSON()), 0o600)
	w.env = append(os.Environ(), "HOME="+w.home, "SCOPECTL_DATA_DIR="+w.data, "XDG_CONFIG_HOME="+filepath.Join(root, "xdg"), "HF_TOKEN=")
	return w
}

// scopectl runs the CLI and returns stdout; it fails the test on a non-zero exit
// unless allowFail.
func (w *world) scopectl(args ...string) string {
	w.t.Helper()
	cmd := exec.Command(w.bin, args...)
	cmd.Env = w.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		w.t.Fatalf("scopectl %s: %v\n%s\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func (w *world) runArgs(extra ...string) []string {
	return append([]string{"train", "run", w.config, "--host", w.host, "--aitk-dir", w.checkout, "--workspace", w.ws,
		"--force", "--compress", "off", "--poll", "100ms", "--stop-grace", "3s", "--kill-grace", "2s", "--interval", "300ms", "--json"}, extra...)
}

func (w *world) status(id string) train.StatusResult {
	w.t.Helper()
	var st train.StatusResult
	if err := json.Unmarshal([]byte(w.scopectl("train", "status", id, "--json")), &st); err != nil {
		w.t.Fatal(err)
	}
	return st
}

func (w *world) waitFor(id string, what string, ok func(*train.State) bool) *train.State {
	w.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		st := w.status(id)
		if ok(st.State) {
			return st.State
		}
		if train.Terminal(st.State.Phase) {
			w.t.Fatalf("job ended (%s: %s) while waiting for %s", st.State.Phase, st.State.Reason, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.t.Fatalf("timed out waiting for %s", what)
	return nil
}

func detachJob(t *testing.T, w *world, extra ...string) string {
	var res train.RunResult
	if err := json.Unmarshal([]byte(w.scopectl(append(w.runArgs(extra...), "--detach")...)), &res); err != nil {
		t.Fatal(err)
	}
	if res.Job.ID == "" {
		t.Fatalf("no job id: %+v", res)
	}
	return res.Job.ID
}

// checkLibrary checks that every checkpoint of the job is in the library with its lineage.
func checkLibrary(t *testing.T, w *world, id string, want int) {
	t.Helper()
	lib, err := library.Open(w.data)
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

// The whole life over SSH, with the laptop side killed (-9) mid-run and reattached.
func TestTrainRunKillReattachCollect(t *testing.T) {
	t.Parallel()
	w := newWorld(t, aitktest.Config{Name: "e2elora", Steps: 60, SaveEvery: 10, Keep: 1, SampleEvery: 20})
	w.env = append(w.env, "SCOPECTL_TEST=1")
	args := append(w.runArgs("--env", aitktest.EnvStepMS+"=80"), "")
	args = args[:len(args)-1]
	cmd := exec.Command(w.bin, args...)
	cmd.Env = w.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the laptop side once a checkpoint has been staged on the machine.
	var id string
	deadline := time.Now().Add(60 * time.Second)
	for id == "" && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		var jobs []store.TrainJob
		if json.Unmarshal([]byte(w.scopectl("train", "ls", "--json")), &jobs) == nil && len(jobs) == 1 {
			id = jobs[0].ID
		}
	}
	if id == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no job recorded\n%s\n%s", out.String(), errb.String())
	}
	t.Logf("%v: job %s recorded", time.Since(t0), id)
	w.waitFor(id, "a staged checkpoint", func(st *train.State) bool { return len(st.Checkpoints) > 0 })
	t.Logf("%v: a checkpoint staged; kill -9", time.Since(t0))
	cmd.Process.Kill()
	cmd.Wait()
	// Reattach: watch to the end.
	var res train.CollectResult
	if err := json.Unmarshal([]byte(w.scopectl("train", "watch", id, "--interval", "300ms", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: watch returned", time.Since(t0))
	st := w.status(id)
	if st.State.Phase != train.PhaseDone {
		t.Fatalf("phase %s (%s)", st.State.Phase, st.State.Reason)
	}
	if len(st.State.Failures) > 0 {
		t.Errorf("failures: %v", st.State.Failures)
	}
	// 5 step saves and the final one; with keep 1 only the newest stays on the machine,
	// the staged copies carry the rest.
	checkLibrary(t, w, id, 6)
	logs := w.scopectl("train", "logs", id)
	if !strings.Contains(logs, "Saved checkpoint to") {
		t.Errorf("train logs lacks the checkpoint lines:\n%s", logs)
	}
	// Collect again: nothing new.
	var again train.CollectResult
	json.Unmarshal([]byte(w.scopectl("train", "collect", id, "--json")), &again)
	for _, c := range again.Checkpoints {
		if c.New {
			t.Errorf("collected twice: %s", c.File)
		}
	}
}

// Stop during a save waits for the save; resume continues from the newest checkpoint.
func TestTrainStopDuringSaveAndResume(t *testing.T) {
	t.Parallel()
	w := newWorld(t, aitktest.Config{Name: "stoplora", Steps: 60, SaveEvery: 10, Keep: 2})
	id := detachJob(t, w, "--env", aitktest.EnvStepMS+"=50", "--env", aitktest.EnvSaveMS+"=2500")
	w.waitFor(id, "saving", func(st *train.State) bool { return st.Phase == train.PhaseSaving })
	w.scopectl("train", "stop", id, "--json")
	deadline := time.Now().Add(60 * time.Second)
	var s train.StatusResult
	for time.Now().Before(deadline) {
		s = w.status(id)
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
	if err := json.Unmarshal([]byte(w.scopectl("train", "resume", id, "--detach", "--json")), &r); err != nil {
		t.Fatal(err)
	}
	var res train.CollectResult
	json.Unmarshal([]byte(w.scopectl("train", "watch", id, "--interval", "300ms", "--json")), &res)
	s = w.status(id)
	if s.State.Phase != train.PhaseDone || s.State.Run != 2 || s.State.ResumedAt != last {
		t.Fatalf("after resume: phase %s (%s), run %d, resumed from step %d, want %d (the newest staged)",
			s.State.Phase, s.State.Reason, s.State.Run, s.State.ResumedAt, last)
	}
	checkLibrary(t, w, id, 1)
}
