package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk"
)

// ErrSupervised is returned by Supervise when another supervisor holds the job.
var ErrSupervised = errors.New("a supervisor already runs this job")

// supervisor is one run of the trainer under watch.
type supervisor struct {
	dir  JobPaths
	spec *Spec
	st   State
	db   *aitk.JobDB
	loss *aitk.LossLog
	log  io.Writer // the supervisor's own messages

	cmd      *exec.Cmd
	exited   chan *os.ProcessState
	waitErr  error
	logPath  string
	logOff   int64
	lineBuf  []byte
	staged   map[string]bool // save names staged (or failed for good)
	pending  map[string]bool // names a "Saved checkpoint" line announced
	seenSize map[string]int64
	lastInfo string
	saving   bool
	sigint   time.Time
	killed   bool
	sawStop  bool
	oomText  string
	errText  string
	diskFull bool
	lastLine string
	lossKey  string
	lineLoss *float64
	samples  map[int][]string
}

// Supervise runs the job in dir (spec.json) to its end: it creates the private job
// database, starts the trainer, follows its log and job row, stages every checkpoint
// into collect/ and keeps state.json current. It returns when the trainer has exited
// and the final state is written; the run's outcome is in the state, not the error.
func Supervise(ctx context.Context, dir string, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	unlock, err := lockJob(filepath.Join(dir, LockFile))
	if err != nil {
		return err
	}
	defer unlock()
	spec, err := ReadSpec(dir)
	if err != nil {
		return err
	}
	s := &supervisor{dir: JobPaths{dir}, spec: spec, log: log, staged: map[string]bool{}, pending: map[string]bool{},
		seenSize: map[string]int64{}, samples: map[int][]string{}}
	prev, err := ReadState(dir)
	if err != nil {
		prev, err = readStateFile(filepath.Join(dir, prevStateFile))
	}
	if err == nil {
		s.st.Run = prev.Run
		s.st.Checkpoints = prev.Checkpoints
		s.st.Failures = prev.Failures
		for _, c := range prev.Checkpoints {
			s.staged[c.File] = true
		}
	}
	if err == nil && !Terminal(prev.Phase) && prev.PID > 0 && trainerAlive(prev.PID, spec.JobID) {
		// The supervisor died (killed, OOM) but its trainer runs on: take it over.
		return s.adopt(ctx, prev)
	}
	s.st.Run++
	s.st.JobID, s.st.Name, s.st.Total = spec.JobID, spec.Name, spec.TotalSteps
	s.st.Phase, s.st.Started, s.st.SupPID = PhaseStarting, time.Now().UTC(), os.Getpid()
	_ = os.Remove(s.dir.Join(ControlDir, stopRequest)) // a stop of an earlier run is done
	for _, d := range []string{CollectDir, ControlDir} {
		if err := os.MkdirAll(s.dir.Join(d), 0o700); err != nil {
			return err
		}
	}
	if len(spec.Pull) > 0 {
		if err := s.prepull(ctx); err != nil {
			if ctx.Err() != nil {
				// Stopped mid-pull (SIGTERM): the state stays "downloading model" and
				// a resume continues the pull where it stopped.
				s.logf("pre-pull interrupted: %v", err)
				s.write()
				return err
			}
			if errors.Is(err, errStopDuringPull) {
				now := time.Now().UTC()
				s.st.Phase, s.st.Reason, s.st.Ended = PhaseStopped, "stopped while downloading the model", &now
				s.logf("stop requested during the pre-pull: stopped")
				s.write()
				return nil
			}
			if s.st.Download != nil {
				s.st.Download.Error = err.Error()
			}
			s.logf("%v", err)
			s.fail(-1, "", err.Error())
			return nil
		}
		s.st.Phase = PhaseStarting
		s.write()
	}
	if err := s.start(ctx); err != nil {
		s.fail(-1, "", err.Error())
		return err
	}
	s.loop(ctx)
	return nil
}

// adopt follows a trainer an earlier supervisor started: its exit code is lost, so
// the outcome comes from the job row and the log.
func (s *supervisor) adopt(ctx context.Context, prev *State) error {
	s.st = *prev
	s.st.SupPID, s.st.Adopted = os.Getpid(), true
	s.logPath, s.logOff = s.dir.Join(LogFile), prev.LogOffset
	db, err := aitk.OpenJobDB(ctx, s.dir.Join(JobDBFile), false)
	if err != nil {
		return err
	}
	s.db = db
	s.exited = make(chan *os.ProcessState, 1)
	pid := prev.PID
	go func() {
		for trainerAlive(pid, s.spec.JobID) {
			time.Sleep(s.poll())
		}
		s.exited <- nil
	}()
	s.logf("run %d: took over trainer pid %d", s.st.Run, pid)
	s.write()
	s.loop(ctx)
	return nil
}

func (s *supervisor) logf(format string, a ...any) {
	fmt.Fprintf(s.log, time.Now().UTC().Format(time.RFC3339)+" "+format+"\n", a...)
}

func (s *supervisor) write() {
	s.st.Updated = time.Now().UTC()
	if err := writeJSON(s.dir.Join(StateFile), &s.st, 0o600); err != nil {
		s.logf("write state: %v", err)
	}
}

// fail ends the run before or without a trainer.
func (s *supervisor) fail(code int, sig, reason string) {
	now := time.Now().UTC()
	s.st.Phase, s.st.Reason, s.st.Ended, s.st.Signal = PhaseFailed, reason, &now, sig
	if code >= 0 {
		s.st.ExitCode = &code
	}
	s.write()
}

// runConfig writes run.yaml: the job config with sqlite_db_path pointing at the
// private job database (DiffusionTrainer reads config.process[0].sqlite_db_path and
// writes the row only when that file exists and AITK_JOB_ID is set).
func (s *supervisor) runConfig(dbPath string) (string, *aitk.Config, error) {
	src := s.spec.Config
	if src == "" {
		src = s.dir.Join(ConfigFile)
	}
	cfg, err := aitk.ReadFile(src, aitk.ParseOptions{})
	if err != nil {
		return "", nil, err
	}
	for i := range cfg.Config.Process {
		cfg.Config.Process[i].SQLiteDBPath = dbPath
	}
	out, err := cfg.Marshal(aitk.YAML)
	if err != nil {
		return "", nil, err
	}
	p := s.dir.Join(RunConfigFile)
	if err := writeFile(p, out, 0o600); err != nil {
		return "", nil, err
	}
	return p, cfg, nil
}

func writeFile(p string, b []byte, perm os.FileMode) error {
	return os.WriteFile(p, b, perm)
}

func (s *supervisor) start(ctx context.Context) error {
	dbPath := s.dir.Join(JobDBFile)
	// A fresh row each run: the trainer only updates it, and a stale stop flag or
	// "completed" status of an earlier run must not leak into this one.
	for _, suf := range []string{"", "-journal", "-wal", "-shm"} {
		_ = os.Remove(dbPath + suf)
	}
	db, err := aitk.CreateJobDB(ctx, dbPath)
	if err != nil {
		return err
	}
	s.db = db
	cfgPath, cfg, err := s.runConfig(dbPath)
	if err != nil {
		return err
	}
	js, _ := cfg.MarshalJSON()
	if err := db.InsertJob(ctx, aitk.NewJob{ID: s.spec.JobID, Name: s.spec.Name, GPUIDs: "0", JobConfig: string(js), TotalSteps: s.spec.TotalSteps}); err != nil {
		return err
	}
	if err := os.MkdirAll(s.spec.SaveDir, 0o755); err != nil {
		return err
	}
	if err := s.prepareResume(); err != nil {
		return err
	}
	env := os.Environ()
	env = append(env, s.spec.Env...)
	env = append(env, aitk.JobEnv+"="+s.spec.JobID, "PYTHONUNBUFFERED=1", "IS_AI_TOOLKIT_UI=1")
	for _, name := range s.spec.SecretEnv {
		b, err := os.ReadFile(s.dir.Join(SecretsDir, name))
		if err != nil {
			return fmt.Errorf("secret %s: %w", name, err)
		}
		env = append(env, name+"="+strings.TrimRight(string(b), "\r\n"))
	}
	argv := make([]string, len(s.spec.Command))
	for i, a := range s.spec.Command {
		argv[i] = strings.ReplaceAll(a, "{config}", cfgPath)
	}
	// The trainer writes straight into train.log (append), not into a pipe of ours: if
	// the supervisor dies, the trainer keeps running (a closed pipe would kill it at its
	// next print), and a new supervisor follows the file.
	s.logPath = s.dir.Join(LogFile)
	lf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if fi, err := lf.Stat(); err == nil {
		s.logOff = fi.Size()
	}
	fmt.Fprintf(lf, "\n[scopectl] run %d of job %s started %s: %s\n", s.st.Run, s.spec.JobID, time.Now().UTC().Format(time.RFC3339), strings.Join(argv, " "))
	if fi, err := lf.Stat(); err == nil {
		s.logOff = fi.Size()
	}
	cmd := exec.Command(lookPath(argv[0], env, s.spec.Workdir), argv[1:]...)
	cmd.Dir = s.spec.Workdir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = newProcessGroup()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	s.cmd = cmd
	s.st.PID = cmd.Process.Pid
	s.exited = make(chan *os.ProcessState, 1)
	go func() {
		err := cmd.Wait()
		s.waitErr = err
		s.exited <- cmd.ProcessState
	}()
	s.logf("run %d: trainer pid %d: %s", s.st.Run, cmd.Process.Pid, strings.Join(argv, " "))
	s.write()
	return nil
}

// prepareResume makes sure the save ai-toolkit will resume from (the newest by ctime)
// is a complete file and the newest checkpoint staged: a save cut short (killed during
// "Saving") is moved aside, and the newest staged copy is put back when the save folder
// lacks it. Copying it in last gives it the newest ctime, which is what ai-toolkit
// picks.
func (s *supervisor) prepareResume() error {
	for {
		ents, err := aitk.ReadSaveDir(s.spec.SaveDir)
		if err != nil {
			return err
		}
		pick, ok := aitk.SelectResume(s.spec.Name, ents)
		if !ok || pick.IsDir || !strings.HasSuffix(pick.Name, ".safetensors") {
			break
		}
		p := filepath.Join(s.spec.SaveDir, pick.Name)
		if err := CheckFile(p); err == nil {
			break
		} else if !errors.Is(err, errIncomplete) {
			return err
		}
		aside := s.dir.Join("broken")
		os.MkdirAll(aside, 0o700)
		s.logf("resume: %s is not a complete save; moved to %s", pick.Name, aside)
		if err := os.Rename(p, filepath.Join(aside, pick.Name)); err != nil {
			return err
		}
	}
	var best *Checkpoint
	for i := range s.st.Checkpoints {
		c := &s.st.Checkpoints[i]
		if c.Final || c.Step < 0 {
			continue
		}
		if best == nil || c.Step > best.Step {
			best = c
		}
	}
	if best == nil {
		return nil
	}
	ents, err := aitk.ReadSaveDir(s.spec.SaveDir)
	if err != nil {
		return err
	}
	if pick, ok := aitk.SelectResume(s.spec.Name, ents); ok {
		if cn, ok := aitk.ParseCheckpointNameFor(s.spec.Name, pick.Name); ok && (cn.Step >= best.Step || cn.Step < 0) {
			return nil // the newest save is complete and not older than what was staged
		}
	}
	s.logf("resume: restoring %s from %s", best.File, CollectDir)
	return copyFile(s.dir.Join(CollectDir, best.File), filepath.Join(s.spec.SaveDir, best.File), 0o644)
}

func (s *supervisor) poll() time.Duration {
	if s.spec.Poll > 0 {
		return s.spec.Poll
	}
	return time.Second
}

func (s *supervisor) loop(ctx context.Context) {
	tick := time.NewTicker(s.poll())
	defer tick.Stop()
	for {
		select {
		case ps := <-s.exited:
			s.readLog()
			s.finish(ps)
			return
		case <-tick.C:
		case <-ctx.Done():
			// The supervisor is asked to end (SIGTERM): the trainer keeps running; a
			// new supervisor can follow it later. Record where we are.
			s.readLog()
			s.write()
			return
		}
		s.readLog()
		s.pollRow(ctx)
		s.pollLoss(ctx)
		s.pollSamples()
		s.scanSaves(false)
		s.control(ctx)
		s.write()
	}
}

// readLog parses what the trainer wrote since the last read.
func (s *supervisor) readLog() {
	f, err := os.Open(s.logPath)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(s.logOff, io.SeekStart); err != nil {
		return
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if len(b) == 0 || err != nil {
		return
	}
	s.logOff += int64(len(b))
	s.st.LogOffset = s.logOff
	data := append(s.lineBuf, b...)
	for {
		adv, tok, _ := aitk.ScanLines(data, false)
		if adv == 0 {
			break
		}
		data = data[adv:]
		s.line(string(tok))
	}
	s.lineBuf = append([]byte(nil), data...)
	if len(s.lineBuf) > 1<<20 {
		s.lineBuf = nil
	}
}

func (s *supervisor) line(l string) {
	// stdout and stderr share train.log: a print can land right after a tqdm redraw
	// on the same line ("tlora: 10%|…]Error running job: …").
	for _, m := range []string{"Error running job:", "Saving at step", "Saved checkpoint to", "Removing old save:"} {
		if i := strings.Index(l, m); i > 0 {
			s.line(l[:i])
			l = l[i:]
			break
		}
	}
	if strings.TrimSpace(l) != "" {
		s.lastLine = strings.TrimSpace(l)
	}
	if strings.Contains(l, "No space left on device") {
		s.diskFull = true
	}
	ev, ok := aitk.ParseLine(l)
	if !ok {
		return
	}
	switch ev.Kind {
	case aitk.EventProgress:
		if strings.TrimSpace(ev.Text) == s.spec.Name || strings.HasPrefix(strings.TrimSpace(ev.Text), s.spec.Name) {
			s.setPhase(PhaseTraining)
			s.saving = false
			if ev.Step > 0 {
				s.st.Step = ev.Step
			}
			if ev.Total > 0 {
				s.st.Total = ev.Total
			}
			if ev.SecondsPerStep > 0 {
				s.st.SecPerIt = ev.SecondsPerStep
			}
			if ev.LR > 0 {
				s.st.LR = ev.LR
			}
			for k, v := range ev.Losses {
				if k == "loss" || s.lineLoss == nil {
					v := v
					s.lineLoss = &v
				}
			}
		} else if strings.Contains(strings.ToLower(ev.Text), "caching") {
			s.setPhase(PhaseCaching)
		}
	case aitk.EventStatus:
		if strings.HasPrefix(ev.Text, "Caching") {
			s.setPhase(PhaseCaching)
		} else if s.st.Phase == PhaseStarting || s.st.Phase == PhaseLoading {
			s.setPhase(PhaseLoading)
		}
		s.st.Info = ev.Text
	case aitk.EventSaving:
		s.saving = true
		s.setPhase(PhaseSaving)
	case aitk.EventCheckpoint:
		s.saving = false
		name := filepath.Base(ev.Path)
		s.pending[name] = true
		s.stage(name, true)
		s.setPhase(PhaseTraining)
	case aitk.EventPruned:
		name := filepath.Base(ev.Path)
		if strings.HasSuffix(name, ".safetensors") {
			s.pruned(name)
		}
	case aitk.EventResumeStep:
		s.st.ResumedAt = ev.Step
		s.st.Step = ev.Step
	case aitk.EventSampling:
		s.setPhase(PhaseSampling)
	case aitk.EventOOM:
		s.oomText = ev.Text
	case aitk.EventOOMSkip:
		s.st.OOMSkips++
	case aitk.EventError:
		s.errText = ev.Text
	case aitk.EventStopped:
		s.sawStop = true
	}
}

func (s *supervisor) setPhase(p string) {
	if s.st.StopAt != nil && p != PhaseSaving {
		p = PhaseStopping
	}
	s.st.Phase = p
}

// pollRow reads the job row the trainer keeps.
func (s *supervisor) pollRow(ctx context.Context) {
	j, err := s.db.Job(ctx, s.spec.JobID)
	if err != nil {
		return
	}
	if j.Step > 0 {
		s.st.Step = j.Step
	}
	if j.TotalSteps > 0 {
		s.st.Total = j.TotalSteps
	}
	if j.SecondsPerStep > 0 {
		s.st.SecPerIt = j.SecondsPerStep
	}
	if j.Info == s.lastInfo {
		return
	}
	s.lastInfo = j.Info
	s.st.Info = j.Info
	info := strings.ToLower(j.Info)
	switch {
	case strings.HasPrefix(info, "saving"):
		s.saving = true
		s.setPhase(PhaseSaving)
	case strings.HasPrefix(info, "generating"):
		s.saving = false
		s.setPhase(PhaseSampling)
	case strings.HasPrefix(info, "training"):
		s.saving = false
		s.setPhase(PhaseTraining)
	case strings.HasPrefix(info, "caching"):
		s.setPhase(PhaseCaching)
	case strings.HasPrefix(info, "loading"), strings.HasPrefix(info, "quantiz"), strings.HasPrefix(info, "starting"):
		s.setPhase(PhaseLoading)
	}
}

// pollLoss reads the newest loss from loss_log.db (logging.use_ui_logger).
func (s *supervisor) pollLoss(ctx context.Context) {
	if s.loss == nil {
		p := filepath.Join(s.spec.SaveDir, aitk.LossLogName)
		if _, err := os.Stat(p); err != nil {
			s.useLineLoss()
			return
		}
		l, err := aitk.OpenLossLog(ctx, p)
		if err != nil {
			s.useLineLoss()
			return
		}
		s.loss = l
	}
	if s.lossKey == "" {
		keys, err := s.loss.Keys(ctx)
		if err != nil {
			s.useLineLoss()
			return
		}
		for _, k := range keys {
			if k.Key == "loss/loss" || (s.lossKey == "" && strings.HasPrefix(k.Key, "loss/")) {
				s.lossKey = k.Key
			}
		}
		if s.lossKey == "" {
			s.useLineLoss()
			return
		}
	}
	last, err := s.loss.LastStep(ctx)
	if err != nil || last < 0 {
		s.useLineLoss()
		return
	}
	if v, ok := s.lossAt(ctx, last); ok {
		s.st.Loss, s.st.LossStep = &v, last
	}
}

func (s *supervisor) useLineLoss() {
	if s.lineLoss != nil {
		s.st.Loss, s.st.LossStep = s.lineLoss, s.st.Step
	}
}

// lossAt is the logged loss at step (or the last one before it).
func (s *supervisor) lossAt(ctx context.Context, step int) (float64, bool) {
	if s.loss == nil || s.lossKey == "" {
		if s.lineLoss != nil {
			return *s.lineLoss, true
		}
		return 0, false
	}
	pts, err := s.loss.Series(ctx, s.lossKey, aitk.SeriesOptions{SinceStep: max(step-50, -1)})
	if err != nil {
		return 0, false
	}
	for i := len(pts) - 1; i >= 0; i-- {
		if pts[i].Step <= step && !pts[i].Null && pts[i].Text == "" {
			return pts[i].Value, true
		}
	}
	return 0, false
}

// pollSamples lists samples/ and files them under their step.
func (s *supervisor) pollSamples() {
	ents, err := os.ReadDir(filepath.Join(s.spec.SaveDir, "samples"))
	if err != nil {
		return
	}
	by := map[int][]string{}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		if sn, ok := aitk.ParseSampleName(e.Name()); ok {
			by[sn.Step] = append(by[sn.Step], e.Name())
		}
	}
	s.samples = by
	for i := range s.st.Checkpoints {
		c := &s.st.Checkpoints[i]
		if l := by[c.Step]; len(l) > len(c.Samples) {
			c.Samples = append([]string(nil), l...)
			sort.Strings(c.Samples)
		}
	}
}

// scanSaves stages saves found in the save folder. Outside the "Saved checkpoint"
// line a file is taken only when it is complete, the trainer is not saving and its
// size has not changed since the last look; final says the trainer has exited.
func (s *supervisor) scanSaves(final bool) {
	ents, err := os.ReadDir(s.spec.SaveDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".safetensors") || s.staged[name] {
			continue
		}
		if _, ok := aitk.ParseCheckpointNameFor(s.spec.Name, name); !ok {
			continue
		}
		if s.pending[name] || final {
			s.stage(name, true)
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		prev, seen := s.seenSize[name]
		s.seenSize[name] = fi.Size()
		if s.saving || !seen || prev != fi.Size() {
			continue
		}
		s.stage(name, false)
	}
}

// stage verifies a save and copies it into collect/.
func (s *supervisor) stage(name string, announced bool) {
	if s.staged[name] {
		return
	}
	src := filepath.Join(s.spec.SaveDir, name)
	size, sum, h, err := copyVerified(src, s.dir.Join(CollectDir, name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.pruned(name)
			return
		}
		if announced {
			s.logf("stage %s: %v (will retry)", name, err)
		}
		return
	}
	cn, _ := aitk.ParseCheckpointNameFor(s.spec.Name, name)
	c := Checkpoint{Step: cn.Step, File: name, Size: size, SHA256: sum, StagedAt: time.Now().UTC()}
	if cn.Step < 0 {
		c.Final = true
		c.Step = trainingStep(h)
		if c.Step < 0 {
			c.Step = s.st.Step
		}
	}
	if v, ok := s.lossAt(context.Background(), c.Step); ok {
		c.Loss = &v
	}
	c.Samples = append([]string(nil), s.samples[c.Step]...)
	s.staged[name] = true
	delete(s.pending, name)
	s.st.Checkpoints = append(s.st.Checkpoints, c)
	s.logf("staged %s (step %d, %d bytes, sha256 %s)", name, c.Step, size, sum)
	s.write()
}

// pruned records that ai-toolkit removed a save: fine once staged, a failure if not.
func (s *supervisor) pruned(name string) {
	for i := range s.st.Checkpoints {
		if s.st.Checkpoints[i].File == name {
			s.st.Checkpoints[i].Pruned = true
			return
		}
	}
	if s.staged[name] {
		return
	}
	s.staged[name] = true
	msg := name + ": pruned by ai-toolkit before it could be copied (collect sooner, or raise save.max_step_saves_to_keep)"
	s.st.Failures = append(s.st.Failures, msg)
	s.logf("%s", msg)
	s.write()
}

// control carries out a stop request: the flag (set by supervise-ctl; set again here),
// then SIGINT after StopGrace (never while saving), then SIGKILL after KillGrace.
func (s *supervisor) control(ctx context.Context) {
	fi, err := os.Stat(s.dir.Join(ControlDir, stopRequest))
	if err != nil {
		return
	}
	now := time.Now()
	if s.st.StopAt == nil {
		t := fi.ModTime().UTC()
		s.st.StopAt = &t
		if err := s.db.SetFlag(ctx, s.spec.JobID, aitk.FlagStop, true); err != nil {
			s.logf("stop flag: %v", err)
		}
		if s.st.Phase != PhaseSaving {
			s.st.Phase = PhaseStopping
		}
		s.logf("stop requested")
	}
	grace, kgrace := s.spec.StopGrace, s.spec.KillGrace
	if grace <= 0 {
		grace = DefaultStopGrace
	}
	if kgrace <= 0 {
		kgrace = DefaultKillGrace
	}
	switch {
	case s.sigint.IsZero() && now.Sub(*s.st.StopAt) >= grace:
		if s.saving && now.Sub(*s.st.StopAt) < 3*grace {
			return // a save under way: SIGINT now could cut the checkpoint short
		}
		s.sigint = now
		s.st.Escalated = "SIGINT"
		s.logf("no stop at a step boundary after %s: SIGINT", grace)
		s.signal(syscall.SIGINT)
	case !s.sigint.IsZero() && !s.killed && now.Sub(s.sigint) >= kgrace:
		s.killed = true
		s.st.Escalated = "SIGKILL"
		s.logf("still running %s after SIGINT: SIGKILL", kgrace)
		s.signal(syscall.SIGKILL)
	}
}

func (s *supervisor) signal(sig syscall.Signal) {
	if s.spec.Container != "" && sig == syscall.SIGKILL {
		_ = exec.Command("docker", "kill", s.spec.Container).Run()
	}
	signalGroup(s.st.PID, sig)
}

// finish records the end of the trainer and why.
func (s *supervisor) finish(ps *os.ProcessState) {
	s.scanSaves(true)
	s.pollSamples()
	ctx := context.Background()
	s.pollLoss(ctx)
	var row aitk.JobState
	if s.db != nil {
		row, _ = s.db.Job(ctx, s.spec.JobID)
		s.db.Close()
	}
	if s.loss != nil {
		s.loss.Close()
	}
	now := time.Now().UTC()
	s.st.Ended = &now
	if ps == nil { // an adopted trainer: no exit status
		switch {
		case row.Status == aitk.StatusCompleted:
			s.st.Phase, s.st.Reason = PhaseDone, "completed"
		case s.st.StopAt != nil || s.sawStop || row.Status == aitk.StatusStopped:
			s.st.Phase, s.st.Reason = PhaseStopped, "stopped"
		default:
			s.st.Phase = PhaseFailed
			s.st.Reason = s.failReason(-1, "", false)
			if s.st.Reason == "exit status -1" || strings.HasPrefix(s.st.Reason, "exit status -1:") {
				s.st.Reason = "the trainer ended while no supervisor watched it; its exit status is unknown (job row: " + row.Status + ")"
			}
		}
		s.logf("adopted trainer exited: %s (%s)", s.st.Phase, s.st.Reason)
		s.write()
		return
	}
	code := ps.ExitCode()
	if code >= 0 {
		s.st.ExitCode = &code
	}
	sig := ""
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		sig = signalName(ws.Signal())
	}
	s.st.Signal = sig
	stopped := s.st.StopAt != nil || s.sawStop || row.Status == aitk.StatusStopped
	killedByOOM := (sig == "SIGKILL" || (s.spec.Container != "" && code == 137)) && !s.killed
	switch {
	case stopped && !killedByOOM:
		s.st.Phase = PhaseStopped
		s.st.Reason = "stopped"
		if s.st.Escalated != "" {
			s.st.Reason = "stopped by " + s.st.Escalated
		}
	case code == 0 && sig == "":
		s.st.Phase = PhaseDone
		s.st.Reason = "completed"
		if row.Step > 0 {
			s.st.Step = max(s.st.Step, row.Step)
		}
	default:
		s.st.Phase = PhaseFailed
		s.st.Reason = s.failReason(code, sig, killedByOOM)
	}
	s.logf("trainer exited: %s (%s)", s.st.Phase, s.st.Reason)
	s.write()
}

func (s *supervisor) failReason(code int, sig string, ramOOM bool) string {
	switch {
	case ramOOM:
		return "killed by SIGKILL: most likely the host ran out of RAM (the kernel's OOM killer); pick a machine with more memory or set model.low_vram"
	case s.oomText != "":
		return "CUDA out of memory: " + oneLine(s.oomText)
	case strings.Contains(s.errText, "OOM") || strings.Contains(strings.ToLower(s.errText), "out of memory"):
		return "CUDA out of memory: " + oneLine(s.errText)
	case s.diskFull:
		return "disk full: No space left on device"
	case s.errText != "":
		return "Error running job: " + oneLine(s.errText)
	case sig != "":
		return "killed by " + sig
	}
	r := fmt.Sprintf("exit status %d", code)
	if s.lastLine != "" {
		r += ": " + oneLine(s.lastLine)
	}
	return r
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// ControlAction is a request supervise-ctl carries out.
type ControlAction string

const (
	CtlStop      ControlAction = "stop"
	CtlSaveNow   ControlAction = "save-now"
	CtlSampleNow ControlAction = "sample-now"
	CtlStatus    ControlAction = "status"
)

// Control carries out action on the job in dir, on the training machine, and returns
// the job's state (with SupervisorAlive set).
func Control(ctx context.Context, dir string, action ControlAction) (*State, error) {
	spec, err := ReadSpec(dir)
	if err != nil {
		return nil, err
	}
	flag := func(f aitk.Flag) error {
		db, err := aitk.OpenJobDB(ctx, filepath.Join(dir, JobDBFile), false)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.SetFlag(ctx, spec.JobID, f, true)
	}
	switch action {
	case CtlStatus:
	case CtlStop:
		if err := os.MkdirAll(filepath.Join(dir, ControlDir), 0o700); err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(dir, ControlDir, stopRequest), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
			return nil, err
		}
		if err := flag(aitk.FlagStop); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	case CtlSaveNow:
		if err := flag(aitk.FlagSaveNow); err != nil {
			return nil, err
		}
	case CtlSampleNow:
		if err := flag(aitk.FlagSampleNow); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown action %q (want stop, save-now, sample-now or status)", action)
	}
	st, err := ReadState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		st, err = &State{JobID: spec.JobID, Name: spec.Name, Phase: PhaseStarting}, nil
	}
	if err != nil {
		return nil, err
	}
	alive := lockHeld(filepath.Join(dir, LockFile))
	st.SupervisorAlive = &alive
	if !alive && !Terminal(st.Phase) {
		st.Orphan = st.PID > 0 && trainerAlive(st.PID, spec.JobID)
		if st.Orphan {
			st.Info = "the supervisor is not running but the trainer is; a new supervisor takes it over"
		} else {
			st.Info = "the supervisor is not running (machine restarted?); resume the job"
		}
	}
	return st, nil
}

// MarshalState is the JSON supervise-ctl prints.
func MarshalState(st *State) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.Encode(st)
	return b.Bytes()
}

// lookPath finds prog on the PATH the trainer gets (exec.Command would use ours).
func lookPath(prog string, env []string, dir string) string {
	if strings.ContainsRune(prog, '/') {
		return prog
	}
	p := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			p = v
		}
	}
	for _, d := range filepath.SplitList(p) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		c := filepath.Join(d, prog)
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return c
		}
	}
	return prog
}
