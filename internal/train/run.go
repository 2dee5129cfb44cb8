package train

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
)

// ErrRefused is returned when the config or dataset checks found errors (see
// RunResult.Problems and Datasets) and Force was not set.
var ErrRefused = errors.New("refused")

// DefaultWorkspace is where jobs live on the machine: a RunPod pod's volume.
const DefaultWorkspace = "/workspace"

// Trainer is the laptop side: it starts jobs on machines reached over SSH and
// reattaches to them by job id.
type Trainer struct {
	Lib  *library.Library
	Jobs store.TrainStore
	// Env opens remotes (credentials, known_hosts policy).
	Env remote.Env
	// Notify receives one-line progress messages (nil: none).
	Notify func(msg string)
	// PodEnv, when set, gives the remote settings for a pod's machine (its own
	// known_hosts: a pod's host keys are new on every boot).
	PodEnv func(podID string) remote.Env
	// Resolve gives a pod's current ssh:// address (a pod's IP and port change when
	// it restarts); nil, or a job without a pod, uses the recorded Target.
	Resolve func(ctx context.Context, job store.TrainJob) (string, error)
	// Progress follows the checkpoints a collection fetches (the zero value: silent).
	Progress progress.Reporter
	// Dial opens a folder on a machine that is not reached over SSH: a Kubernetes
	// Job's pod, k8s://CONTEXT/NAMESPACE/JOB followed by the folder (its agent sidecar
	// for files, exec for commands). nil: SSH machines only.
	Dial func(ctx context.Context, addr string) (remote.Remote, error)
}

// target is where the job's machine is now.
func (t *Trainer) target(ctx context.Context, job store.TrainJob) (string, error) {
	if t.Resolve == nil || job.PodID == "" {
		return job.Target, nil
	}
	u, err := t.Resolve(ctx, job)
	if err != nil {
		return "", err
	}
	return baseURL(u)
}

// openJob opens dir on the job's machine.
func (t *Trainer) openJob(ctx context.Context, job store.TrainJob, dir string) (remote.Remote, error) {
	base, err := t.target(ctx, job)
	if err != nil {
		return nil, err
	}
	return t.open(ctx, base, dir, job.PodID)
}

// connectJob connects to the job's machine with the job folder as the remote.
func (t *Trainer) connectJob(ctx context.Context, job store.TrainJob) (*machine, error) {
	base, err := t.target(ctx, job)
	if err != nil {
		return nil, err
	}
	return t.connect(ctx, base, job.JobDir, job.PodID)
}

func (t *Trainer) note(format string, a ...any) {
	if t.Notify != nil {
		t.Notify(fmt.Sprintf(format, a...))
	}
}

// RunInput describes a job to start.
type RunInput struct {
	Config string // the ai-toolkit job config on this machine
	// Target is the machine: ssh://user@host:port.
	Target string
	PodID  string // the RunPod pod Target reaches, if any
	// How ai-toolkit runs there: AITKDir (a checkout: python run.py), Image (docker
	// run of an ai-toolkit image), or neither with InImage (the machine's own image is
	// ai-toolkit's: /app/ai-toolkit).
	AITKDir string
	Image   string
	// DockerGPUs is docker run --gpus (default "all"; "-" for none, in tests).
	DockerGPUs string
	Workspace  string // default /workspace
	// Binary is the scopectl to copy there (default: this one, if linux/amd64).
	Binary string
	// MachineBinary is a scopectl already on the machine (a Kubernetes Job's pod has
	// one), used when Binary is empty and this scopectl cannot run there.
	MachineBinary string
	Force         bool
	// NoPrepull leaves the base model to the trainer's own download instead of
	// pulling it into the machine's HF cache first (Spec.Pull).
	NoPrepull bool
	// Env is added to the trainer's environment (not for secrets).
	Env []string
	// HFToken reaches the trainer as HF_TOKEN through a 0600 file.
	HFToken   secret.Secret
	CostPerHr float64
	Preview   string
	Keep      bool
	// Kubeconfig is recorded with a job on Kubernetes (store.TrainJob.Kubeconfig): the
	// path(s) its cluster was reached with, never the content.
	Kubeconfig string
	// Tuning of the supervisor (zero: defaults).
	StopGrace, KillGrace, Poll time.Duration
}

// RunResult is what Run did.
type RunResult struct {
	Job      store.TrainJob    `json:"job"`
	Problems []aitk.Problem    `json:"problems,omitempty"`
	Datasets []*dataset.Report `json:"datasets,omitempty"`
	Sync     SyncStats         `json:"dataset_sync"`
	Refused  bool              `json:"refused,omitempty"`
}

var jobNameRe = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

func newJobID(name string) string {
	var b [4]byte
	rand.Read(b[:])
	n := jobNameRe.ReplaceAllString(name, "-")
	if len(n) > 40 {
		n = n[:40]
	}
	return n + "-" + time.Now().UTC().Format("0102") + hex.EncodeToString(b[:])
}

// machine is an open connection to a job's machine.
type machine struct {
	t      *Trainer
	base   string // ssh://user@host:port
	pod    string
	remote remote.Remote
	run    remote.Runner
}

func baseURL(target string) (string, error) {
	if strings.HasPrefix(target, "k8s://") {
		return target, nil // k8s://CONTEXT/NAMESPACE/JOB: folders follow it
	}
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "ssh" || u.Host == "" {
		return "", fmt.Errorf("%s: want ssh://user@host:port", remote.Redact(target))
	}
	u.Path, u.RawPath = "", ""
	return u.String(), nil
}

// open opens dir on the machine (pod: the pod's id, or "").
func (t *Trainer) open(ctx context.Context, base, dir, pod string) (remote.Remote, error) {
	if t.Dial != nil && strings.HasPrefix(base, "k8s://") {
		return t.Dial(ctx, base+dir)
	}
	env := t.Env
	if pod != "" && t.PodEnv != nil {
		env = t.PodEnv(pod)
	}
	return remote.Open(ctx, base+dir, env)
}

func (t *Trainer) connect(ctx context.Context, target, dir, pod string) (*machine, error) {
	base, err := baseURL(target)
	if err != nil {
		return nil, err
	}
	r, err := t.open(ctx, base, dir, pod)
	if err != nil {
		return nil, err
	}
	run, ok := r.(remote.Runner)
	if !ok {
		r.Close()
		return nil, fmt.Errorf("%s cannot run commands", r)
	}
	return &machine{t: t, base: base, pod: pod, remote: r, run: run}, nil
}

func (m *machine) Close() error { return m.remote.Close() }

// sh runs a script and fails on a non-zero exit.
func (m *machine) sh(ctx context.Context, script string) (string, error) {
	out, code, err := m.run.Run(ctx, script)
	if err != nil {
		return out, err
	}
	if code != 0 {
		return out, fmt.Errorf("%s: %s: exit status %d: %s", m.remote, firstLine(script), code, strings.TrimSpace(out))
	}
	return out, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (m *machine) put(ctx context.Context, r remote.Remote, name string, b []byte) error {
	sum := sha256.Sum256(b)
	_, err := r.Put(ctx, name, remote.Source{R: bytes.NewReader(b), Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}, remote.PutOptions{})
	return err
}

// Run checks the config and its datasets, sends the datasets and scopectl to the
// machine, starts the supervisor there and records the job. It returns once the
// supervisor runs; Watch follows it.
func (t *Trainer) Run(ctx context.Context, in RunInput) (*RunResult, error) {
	return t.run(ctx, in, nil)
}

// resumeFrom is a job continued on another machine: its id, and the checkpoint to
// put into the new save folder (last, so that its ctime is the newest).
type resumeFrom struct {
	job  store.TrainJob
	ckpt store.TrainCheckpoint
	path string // the checkpoint's file in the library
}

func (t *Trainer) run(ctx context.Context, in RunInput, rs *resumeFrom) (*RunResult, error) {
	raw, err := os.ReadFile(in.Config)
	if err != nil {
		return nil, err
	}
	cfg, err := aitk.ReadFile(in.Config, aitk.ParseOptions{})
	if err != nil {
		return nil, err
	}
	res := &RunResult{Problems: aitk.Validate(cfg, aitk.ValidateOptions{})}
	failed := aitk.HasErrors(res.Problems)
	if len(cfg.Config.Process) == 0 || cfg.Config.Name == "" {
		return res, fmt.Errorf("%s: no config.name or config.process", in.Config)
	}
	// Datasets: check each, as ai-toolkit will read it.
	type dsRef struct{ p, d int }
	local := map[datasetSource][]dsRef{}
	var order []datasetSource
	for pi := range cfg.Config.Process {
		p := &cfg.Config.Process[pi]
		for di, d := range p.Datasets {
			if d.FolderPath == "" {
				return res, fmt.Errorf("config.process[%d].datasets[%d]: only folder_path datasets can be sent", pi, di)
			}
			src, err := t.resolveDataset(ctx, d.FolderPath, in.Config)
			if err != nil {
				return res, fmt.Errorf("config.process[%d].datasets[%d].folder_path: %w", pi, di, err)
			}
			rep, err := t.checkDataset(ctx, src, DatasetOptions(p, d))
			if err != nil {
				return res, fmt.Errorf("dataset %s: %w", src, err)
			}
			res.Datasets = append(res.Datasets, rep)
			if rep.Fails() {
				failed = true
			}
			if _, ok := local[src]; !ok {
				order = append(order, src)
			}
			local[src] = append(local[src], dsRef{pi, di})
		}
	}
	if failed && !in.Force {
		res.Refused = true
		return res, fmt.Errorf("%w: the config or a dataset has errors (--force runs it anyway)", ErrRefused)
	}
	bin, err := t.binary(in.Binary)
	if err != nil && in.Binary == "" && in.MachineBinary != "" {
		bin, err = nil, nil // the machine's own
	}
	if err != nil {
		return res, err
	}
	ws := in.Workspace
	if ws == "" {
		ws = DefaultWorkspace
	}
	id := newJobID(cfg.Config.Name)
	if rs != nil {
		id = rs.job.ID
		if csum := sha256.Sum256(raw); hex.EncodeToString(csum[:]) != rs.job.ConfigSHA && !in.Force {
			return res, fmt.Errorf("%w: %s changed since job %s started (its sha256 differs); --force resumes with it anyway", ErrRefused, in.Config, id)
		}
		if err := t.sameDatasets(ctx, order, rs.job); err != nil && !in.Force {
			res.Refused = errors.Is(err, ErrRefused)
			return res, err
		}
	}
	jobDir := path.Join(ws, ".scopectl", "jobs", id)
	m, err := t.connect(ctx, in.Target, jobDir, in.PodID)
	if err != nil {
		return res, err
	}
	defer m.Close()
	if _, err := m.sh(ctx, "chmod 700 "+shq(jobDir)+" && mkdir -p -m 700 "+shq(path.Join(jobDir, SecretsDir))); err != nil {
		return res, err
	}
	// Recorded before anything is sent, so that `train ls` shows a job being prepared.
	base := ""
	if p := cfg.Config.Process[0]; p.Model != nil {
		base = p.Model.NameOrPath
	}
	csum := sha256.Sum256(raw)
	abs, _ := filepath.Abs(in.Config)
	job := store.TrainJob{ID: id, Name: cfg.Config.Name, Target: m.base, PodID: in.PodID, Workspace: ws, JobDir: jobDir,
		ConfigPath: abs, ConfigSHA: hex.EncodeToString(csum[:]), BaseModel: base, CostPerHr: in.CostPerHr,
		StartedAt: time.Now().UTC(), Phase: PhasePreparing, Preview: in.Preview, Keep: in.Keep, Kubeconfig: in.Kubeconfig}
	if err := t.Jobs.PutTrainJob(ctx, job); err != nil {
		return res, err
	}
	// scopectl, content-addressed: a running supervisor's binary is never replaced.
	binPath := in.MachineBinary
	if bin != nil {
		if binPath, err = t.sendBinary(ctx, m, ws, bin); err != nil {
			return res, err
		}
	}
	job.Binary = binPath
	// Datasets, into content-named folders.
	var dsIDs []string
	for _, dir := range order {
		files, sum, err := t.datasetFilesOf(ctx, dir)
		if err != nil {
			return res, err
		}
		dsIDs = append(dsIDs, sum)
		rdir := path.Join(ws, "datasets", sum[:16])
		t.note("dataset %s: %d files → %s", dir, len(files), rdir)
		st, err := syncDataset(ctx, func(ctx context.Context, d string) (remote.Remote, error) { return t.open(ctx, m.base, d, m.pod) }, rdir, files)
		res.Sync.Files += st.Files
		res.Sync.Sent += st.Sent
		res.Sync.Bytes += st.Bytes
		res.Sync.Resumed += st.Resumed
		if err != nil {
			return res, err
		}
		for _, r := range local[dir] {
			cfg.Config.Process[r.p].Datasets[r.d].FolderPath = rdir
		}
	}
	// The config copy: outputs under the job's own training folder.
	training := path.Join(ws, "output", id)
	for i := range cfg.Config.Process {
		cfg.Config.Process[i].TrainingFolder = training
	}
	out, err := cfg.Marshal(aitk.YAML)
	if err != nil {
		return res, err
	}
	if err := m.put(ctx, m.remote, ConfigFile, out); err != nil {
		return res, err
	}
	p0 := cfg.Config.Process[0]
	spec := Spec{Version: specVersion, JobID: id, Name: cfg.Config.Name, Config: path.Join(jobDir, ConfigFile),
		SaveDir: path.Join(training, cfg.Config.Name), StopGrace: in.StopGrace, KillGrace: in.KillGrace, Poll: in.Poll}
	if p0.Train != nil && p0.Train.Steps != nil {
		spec.TotalSteps = *p0.Train.Steps
	}
	if p0.Save != nil && p0.Save.MaxStepSavesToKeep != nil {
		spec.Keep = *p0.Save.MaxStepSavesToKeep
	}
	spec.Env = append([]string{"HF_HOME=" + path.Join(ws, "hf")}, in.Env...)
	if !in.NoPrepull {
		spec.Pull = aitk.PrepullPlan(cfg)
	}
	if in.HFToken.IsSet() {
		sr, err := t.open(ctx, m.base, path.Join(jobDir, SecretsDir), m.pod)
		if err != nil {
			return res, err
		}
		err = m.put(ctx, sr, "HF_TOKEN", []byte(in.HFToken.Reveal()+"\n"))
		sr.Close()
		if err != nil {
			return res, err
		}
		if _, err := m.sh(ctx, "chmod 600 "+shq(path.Join(jobDir, SecretsDir, "HF_TOKEN"))); err != nil {
			return res, err
		}
		spec.SecretEnv = append(spec.SecretEnv, "HF_TOKEN")
	}
	t.command(&spec, in, ws)
	sj, _ := json.MarshalIndent(spec, "", "  ")
	if err := m.put(ctx, m.remote, SpecFile, sj); err != nil {
		return res, err
	}
	if rs != nil {
		// The checkpoint to continue from goes into the new save folder last: ai-toolkit
		// resumes from the newest file by ctime, and reads the step from its metadata.
		sr, err := t.open(ctx, m.base, spec.SaveDir, m.pod)
		if err != nil {
			return res, err
		}
		f, err := os.Open(rs.path)
		if err == nil {
			_, err = sr.Put(ctx, rs.ckpt.File, remote.Source{R: f, Size: rs.ckpt.Size, SHA256: rs.ckpt.SHA256}, remote.PutOptions{})
			f.Close()
		}
		sr.Close()
		if err != nil {
			return res, fmt.Errorf("resume: sending %s: %w", rs.ckpt.File, err)
		}
		t.note("resume: step %d (%s) sent", rs.ckpt.Step, rs.ckpt.File)
	}
	job.DatasetSHA = DatasetSHA(dsIDs)
	job.SaveDir = spec.SaveDir
	job.Steps = spec.TotalSteps
	job.Phase = PhaseStarting
	if err := t.Jobs.PutTrainJob(ctx, job); err != nil {
		return res, err
	}
	res.Job = job
	if err := startSupervisor(ctx, m, job); err != nil {
		return res, err
	}
	t.note("job %s started on %s", id, remote.Redact(m.base))
	return res, nil
}

// command fills in how the trainer is started.
func (t *Trainer) command(s *Spec, in RunInput, ws string) {
	switch {
	case in.Image != "":
		s.Container = "scopectl-" + s.JobID
		args := []string{"docker", "run", "--rm", "--name", s.Container, "--ipc", "host", "--init=false",
			"-v", ws + ":" + ws, "-w", "/app/ai-toolkit"}
		if g := in.DockerGPUs; g != "-" {
			if g == "" {
				g = "all"
			}
			args = append(args, "--gpus", g)
		}
		// Values reach docker run from its own environment (the supervisor's), never
		// from its command line.
		names := []string{aitk.JobEnv, "PYTHONUNBUFFERED", "IS_AI_TOOLKIT_UI"}
		for _, kv := range s.Env {
			if k, _, ok := strings.Cut(kv, "="); ok {
				names = append(names, k)
			}
		}
		names = append(names, s.SecretEnv...)
		for _, n := range names {
			args = append(args, "-e", n)
		}
		s.Command = append(args, in.Image, "python", "run.py", "{config}")
	default:
		dir := in.AITKDir
		if dir == "" {
			dir = "/app/ai-toolkit"
		}
		s.Workdir = dir
		// The venv ai-toolkit's UI would use, else python on PATH.
		s.Command = []string{"sh", "-c", `for p in .venv/bin/python venv/bin/python; do [ -x "$p" ] && exec "$p" run.py "$0"; done; ` +
			`command -v python >/dev/null 2>&1 && exec python run.py "$0"; exec python3 run.py "$0"`, "{config}"}
	}
}

func (t *Trainer) binary(p string) ([]byte, error) {
	if p == "" {
		if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
			return nil, fmt.Errorf("this scopectl is %s/%s; pass a linux/amd64 build for the machine", runtime.GOOS, runtime.GOARCH)
		}
		var err error
		if p, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	return os.ReadFile(p)
}

func (t *Trainer) sendBinary(ctx context.Context, m *machine, ws string, bin []byte) (string, error) {
	sum := sha256.Sum256(bin)
	name := "scopectl-" + hex.EncodeToString(sum[:6])
	dir := path.Join(ws, ".scopectl", "bin")
	r, err := t.open(ctx, m.base, dir, m.pod)
	if err != nil {
		return "", err
	}
	defer r.Close()
	ents, err := r.List(ctx)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if e.Name == name && e.Size == int64(len(bin)) {
			return path.Join(dir, name), nil
		}
	}
	t.note("sending scopectl (%d MiB)", len(bin)>>20)
	if err := m.put(ctx, r, name, bin); err != nil {
		return "", err
	}
	p := path.Join(dir, name)
	_, err = m.sh(ctx, "chmod 755 "+shq(p))
	return p, err
}

// startSupervisor starts `scopectl train supervise` detached (its own session, no
// terminal, output to supervisor.log) and waits until it has written state.json.
func startSupervisor(ctx context.Context, m *machine, job store.TrainJob) error {
	d := job.JobDir
	script := strings.Join([]string{
		"cd " + shq(d) + " || exit 1",
		// setsid and nohup where the image has them (minimal images lack nohup; a
		// new session without a terminal gets no SIGHUP anyway).
		"S=; command -v setsid >/dev/null 2>&1 && S=setsid",
		"N=; command -v nohup >/dev/null 2>&1 && N=nohup",
		"$N $S " + shq(job.Binary) + " train supervise --job-dir " + shq(d) + " >> " + SupervisorLog + " 2>&1 < /dev/null &",
		"i=0; while [ $i -lt 100 ]; do [ -f " + StateFile + " ] && exit 0; i=$((i+1)); sleep 0.1; done",
		"echo 'the supervisor did not start:'; tail -n 5 " + SupervisorLog + "; exit 1",
	}, "\n")
	_, err := m.sh(ctx, script)
	return err
}

// Job returns a recorded job.
func (t *Trainer) Job(ctx context.Context, id string) (store.TrainJob, error) {
	return t.Jobs.GetTrainJob(ctx, id)
}

// ctl runs supervise-ctl on the machine and returns the state it prints.
func (t *Trainer) ctl(ctx context.Context, job store.TrainJob, action ControlAction) (*State, error) {
	if job.Binary == "" || job.Phase == PhasePreparing {
		if action != CtlStatus {
			return nil, fmt.Errorf("job %s is still being prepared (no supervisor yet)", job.ID)
		}
		return &State{JobID: job.ID, Name: job.Name, Phase: PhasePreparing, Started: job.StartedAt}, nil
	}
	m, err := t.connectJob(ctx, job)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	out, err := m.sh(ctx, shq(job.Binary)+" train supervise-ctl --job-dir "+shq(job.JobDir)+" "+string(action))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal([]byte(lastJSONLine(out)), &st); err != nil {
		return nil, fmt.Errorf("supervise-ctl %s: %v: %s", action, err, strings.TrimSpace(out))
	}
	return &st, nil
}

func lastJSONLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(strings.TrimSpace(lines[i]), "{") {
			return lines[i]
		}
	}
	return out
}

// StatusResult is a job's record and its state on the machine.
type StatusResult struct {
	Job   store.TrainJob `json:"job"`
	State *State         `json:"state"`
	// Cost is the machine's $/h × the time since the job started (to its end).
	Cost float64 `json:"cost,omitempty"`
	// Recorded is set when the machine could not be asked and the job had ended: the
	// state is the one recorded at its end (the pod released, stopped or gone), and
	// Unreachable says why the machine was not asked.
	Recorded    bool   `json:"recorded,omitempty"`
	Unreachable string `json:"unreachable,omitempty"`
}

// Status asks the machine how the job goes and records what it says. A job that had
// ended, whose machine is gone (a training pod released after its last checkpoint was
// collected, a pod stopped at the job's end), is answered from its record.
func (t *Trainer) Status(ctx context.Context, id string) (*StatusResult, error) {
	job, st, err := t.current(ctx, id)
	if err != nil {
		if job.ID == "" || job.EndedAt == nil || !Terminal(job.Phase) {
			return nil, err
		}
		st = &State{JobID: job.ID, Name: job.Name, Phase: job.Phase, Step: job.Step, Total: job.Steps,
			Started: job.StartedAt, Ended: job.EndedAt, Checkpoints: []Checkpoint{}}
		if job.UpdatedAt != nil {
			st.Updated = *job.UpdatedAt
		}
		return &StatusResult{Job: job, State: st, Cost: cost(job), Recorded: true, Unreachable: err.Error()}, nil
	}
	return &StatusResult{Job: job, State: st, Cost: cost(job)}, nil
}

// current reads job id's record, asks its machine how it goes and records the answer.
func (t *Trainer) current(ctx context.Context, id string) (store.TrainJob, *State, error) {
	job, err := t.Jobs.GetTrainJob(ctx, id)
	if err != nil {
		return job, nil, err
	}
	st, err := t.ctl(ctx, job, CtlStatus)
	if err != nil {
		return job, nil, err
	}
	t.record(ctx, &job, st)
	return job, st, nil
}

func cost(j store.TrainJob) float64 {
	end := time.Now()
	if j.EndedAt != nil {
		end = *j.EndedAt
	}
	return j.CostPerHr * end.Sub(j.StartedAt).Hours()
}

func (t *Trainer) record(ctx context.Context, job *store.TrainJob, st *State) {
	if st.Phase == PhasePreparing {
		return // the laptop that prepares it owns the record
	}
	now := time.Now().UTC()
	job.Phase, job.Step, job.UpdatedAt = st.Phase, st.Step, &now
	job.EndedAt = nil
	if Terminal(st.Phase) && st.Ended != nil {
		job.EndedAt = st.Ended
	}
	// Only the state columns: another scopectl (the one running `train run`, a resume)
	// may be writing the rest of the record meanwhile.
	_ = t.Jobs.SetTrainJobState(ctx, job.ID, job.Phase, job.Step, job.EndedAt)
}

// Stop asks the supervisor to stop the job (flag, then SIGINT, then SIGKILL). When
// the supervisor is gone but its trainer runs on (the supervisor was killed), the flag
// alone would leave a hung trainer running on the user's money: a new supervisor is
// started, takes the trainer over and carries the stop out with the same escalation.
func (t *Trainer) Stop(ctx context.Context, id string) (*State, error) {
	job, err := t.Jobs.GetTrainJob(ctx, id)
	if err != nil {
		return nil, err
	}
	st, err := t.ctl(ctx, job, CtlStop)
	if err != nil || !st.Orphan {
		return st, err
	}
	m, err := t.connectJob(ctx, job)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if err := startSupervisor(ctx, m, job); err != nil {
		return nil, fmt.Errorf("job %s: its supervisor is gone and a new one did not start to stop the trainer: %w", id, err)
	}
	t.note("job %s: the supervisor was not running; started one, which took the trainer over to stop it", id)
	return t.ctl(ctx, job, CtlStatus)
}

// SaveNow asks the trainer to save a checkpoint at the next step.
func (t *Trainer) SaveNow(ctx context.Context, id string) (*State, error) {
	return t.control(ctx, id, CtlSaveNow)
}

// SampleNow asks the trainer to make samples at the next step.
func (t *Trainer) SampleNow(ctx context.Context, id string) (*State, error) {
	return t.control(ctx, id, CtlSampleNow)
}

func (t *Trainer) control(ctx context.Context, id string, a ControlAction) (*State, error) {
	job, err := t.Jobs.GetTrainJob(ctx, id)
	if err != nil {
		return nil, err
	}
	return t.ctl(ctx, job, a)
}

// Resume starts the job's supervisor again on its machine: ai-toolkit continues
// from the newest complete checkpoint (the supervisor moves a save cut short aside
// and restores the newest staged copy when the save folder lacks it).
func (t *Trainer) Resume(ctx context.Context, id string) (*StatusResult, error) {
	job, err := t.Jobs.GetTrainJob(ctx, id)
	if err != nil {
		return nil, err
	}
	st, err := t.ctl(ctx, job, CtlStatus)
	if err != nil {
		return nil, err
	}
	if st.SupervisorAlive != nil && *st.SupervisorAlive {
		return nil, fmt.Errorf("job %s is still running (%s); stop it first", id, st.Phase)
	}
	m, err := t.connectJob(ctx, job)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	// The new supervisor reads the earlier state (run number, staged checkpoints) from
	// state.prev.json; startSupervisor waits for a new state.json.
	if _, err := m.sh(ctx, "cd "+shq(job.JobDir)+" && mv -f "+StateFile+" "+prevStateFile); err != nil {
		return nil, err
	}
	job.EndedAt = nil
	job.Phase = PhaseStarting
	if err := t.Jobs.PutTrainJob(ctx, job); err != nil {
		return nil, err
	}
	if err := startSupervisor(ctx, m, job); err != nil {
		return nil, err
	}
	return t.Status(ctx, id)
}

// ResumeOn continues a job on another machine (in.Target / in.PodID and how ai-toolkit
// runs there): the same config (refused if it changed, unless Force) and datasets are
// sent as by Run, and the job's newest collected checkpoint from the library is put
// into the new save folder last, so that ai-toolkit resumes from it. The job keeps its
// id; its record moves to the new machine.
func (t *Trainer) ResumeOn(ctx context.Context, id string, in RunInput) (*RunResult, error) {
	job, err := t.Jobs.GetTrainJob(ctx, id)
	if err != nil {
		return nil, err
	}
	cps, err := t.Jobs.ListTrainCheckpoints(ctx, job.ID)
	if err != nil {
		return nil, err
	}
	var best *store.TrainCheckpoint
	for i := range cps {
		if _, ok := aitk.ParseCheckpointNameFor(job.Name, cps[i].File); !ok {
			continue
		}
		if best == nil || cps[i].Step > best.Step {
			best = &cps[i]
		}
	}
	if best == nil {
		return nil, fmt.Errorf("job %s has no collected checkpoint to resume from (`scopectl train collect %s` first; or train run again)", id, id)
	}
	e, err := t.Lib.Store.GetBySHA(ctx, best.SHA256)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", best.File, err)
	}
	if err := t.Lib.Check(ctx, e); err != nil {
		return nil, err
	}
	if in.Config == "" {
		in.Config = job.ConfigPath
	}
	return t.run(ctx, in, &resumeFrom{job: job, ckpt: *best, path: e.Path})
}

// Logs copies train.log from byte offset off to w and returns the new offset; with
// follow it keeps copying until the job has ended.
func (t *Trainer) Logs(ctx context.Context, id string, off int64, follow bool, w io.Writer) (int64, error) {
	job, err := t.Jobs.GetTrainJob(ctx, id)
	if err != nil {
		return off, err
	}
	r, err := t.openJob(ctx, job, job.JobDir)
	if err != nil {
		return off, err
	}
	defer r.Close()
	for i := 0; ; i++ {
		n, err := copyFrom(ctx, r, LogFile, off, w)
		off += n
		if err != nil && !errors.Is(err, remote.ErrNotFound) {
			return off, err
		}
		if !follow {
			return off, nil
		}
		if n == 0 && i%3 == 0 {
			st, err := t.ctl(ctx, job, CtlStatus)
			if err == nil && (Terminal(st.Phase) || (st.SupervisorAlive != nil && !*st.SupervisorAlive)) {
				n, _ := copyFrom(ctx, r, LogFile, off, w)
				return off + n, nil
			}
		}
		select {
		case <-ctx.Done():
			return off, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func copyFrom(ctx context.Context, r remote.Remote, name string, off int64, w io.Writer) (int64, error) {
	rc, err := r.Get(ctx, name, off)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(w, rc)
}

// DefaultImage is the ai-toolkit image `train run --new` rents a pod with: pinned to
// the release scopectl's formats were read from.
const DefaultImage = "ostris/aitoolkit:" + aitk.Version

// AllowedCUDA is the CUDA versions a pod for DefaultImage may have: the image is built
// on CUDA 13.0 (nvidia/cuda:13.0.3, torch cu130) and needs driver ≥ 580.
var AllowedCUDA = []string{"13.0"}
