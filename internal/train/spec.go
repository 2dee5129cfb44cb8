// Package train runs ai-toolkit training jobs on a GPU machine and brings their
// checkpoints home: the laptop side (Run, Status, Logs, Stop, Resume, Collect,
// Watch) and the on-machine supervisor (Supervise, Control) it starts there.
//
// The supervisor is scopectl itself, copied to the machine and started detached
// (like SkyPilot's skylet), so a run survives the laptop sleeping or scopectl being
// killed. It owns a private ai-toolkit job database (never the UI's aitk_db.db),
// starts the trainer, tees its console into train.log, and keeps state.json (written
// atomically) current: the phase, step, speed, loss, the exit and its reason, and every
// checkpoint it verified and copied into collect/ before ai-toolkit could prune it.
// Everything the laptop needs afterwards is in the job folder, so every command
// reattaches by job id.
package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/atomicfile"
)

// Files of a job folder (JobDir) on the training machine.
const (
	SpecFile       = "spec.json"       // written by the laptop: what to run
	StateFile      = "state.json"      // written by the supervisor: how it goes
	prevStateFile  = "state.prev.json" // the state of the run before a resume
	ConfigFile     = "config.yaml"     // the job config as the laptop sent it
	RunConfigFile  = "run.yaml"        // the config the trainer reads (sqlite_db_path set)
	JobDBFile      = "job.db"          // the private ai-toolkit job database
	LogFile        = "train.log"       // the trainer's stdout and stderr, as written
	SupervisorLog  = "supervisor.log"  // the supervisor's own output
	LockFile       = "supervisor.lock"
	CollectDir     = "collect" // verified copies of checkpoints
	ControlDir     = "control" // requests to the supervisor (stop)
	SecretsDir     = "secrets" // 0600 files holding secret environment values
	stopRequest    = "stop"    // ControlDir/stop: stop requested (its content: the request time)
	specVersion    = 1
	defaultLogName = "train.log"
)

// Spec is what the laptop writes into the job folder for the supervisor: the job, the
// command that runs ai-toolkit, and where things are. Paths are on the machine.
type Spec struct {
	Version int    `json:"version"`
	JobID   string `json:"job_id"` // AITK_JOB_ID and the job folder's name
	Name    string `json:"name"`   // config.name
	// Config is the job config (ConfigFile in the job folder when empty).
	Config string `json:"config,omitempty"`
	// SaveDir is training_folder/name, where ai-toolkit writes checkpoints.
	SaveDir string `json:"save_dir"`
	// Workdir is where the command runs (an ai-toolkit checkout, or anywhere for
	// docker).
	Workdir string `json:"workdir,omitempty"`
	// Command runs the trainer; "{config}" in an argument is replaced by the run
	// config's path. Examples: ["python","run.py","{config}"],
	// ["docker","run","--rm",…,"IMAGE","python","run.py","{config}"].
	Command []string `json:"command"`
	// Container names the docker container Command starts (docker kill reaches it
	// when the docker client is gone).
	Container string `json:"container,omitempty"`
	// Env is added to the trainer's environment (no secrets: "K=V").
	Env []string `json:"env,omitempty"`
	// SecretEnv names variables whose values are read from 0600 files in SecretsDir
	// (file name = variable name) and passed in the environment only.
	SecretEnv []string `json:"secret_env,omitempty"`
	// TotalSteps is train.steps.
	TotalSteps int `json:"total_steps,omitempty"`
	// Keep is save.max_step_saves_to_keep (for the record; pruning is ai-toolkit's).
	Keep int `json:"keep,omitempty"`
	// Timeouts of the stop escalation (zero: the defaults).
	StopGrace time.Duration `json:"stop_grace,omitempty"` // flag → SIGINT
	KillGrace time.Duration `json:"kill_grace,omitempty"` // SIGINT → SIGKILL
	// Poll is how often the supervisor looks at the job row, the save folder and
	// the loss log (default 1s).
	Poll time.Duration `json:"poll,omitempty"`
	// Pull is what the supervisor downloads into the trainer's HF cache (HF_HUB_CACHE,
	// else $HF_HOME/hub from Env) before the trainer starts: the base model and the other
	// Hub models the config names (aitk.PrepullPlan). Empty: the trainer downloads.
	Pull []aitk.PullItem `json:"pull,omitempty"`
}

// Default stop escalation: a Wan 14B step can take a minute and a save longer.
const (
	DefaultStopGrace = 5 * time.Minute
	DefaultKillGrace = 2 * time.Minute
)

// Phases of a run, as State.Phase.
const (
	PhasePreparing = "preparing" // the laptop is still sending (no supervisor yet)
	PhaseStarting  = "starting"
	// PhaseDownloading ("downloading model", prepull.go) comes between the two.
	PhaseLoading  = "loading model"
	PhaseCaching  = "caching latents"
	PhaseTraining = "training"
	PhaseSampling = "sampling"
	PhaseSaving   = "saving"
	PhaseStopping = "stopping"
	PhaseDone     = "done"
	PhaseFailed   = "failed"
	PhaseStopped  = "stopped"
)

// Terminal reports whether a phase is an end.
func Terminal(phase string) bool {
	return phase == PhaseDone || phase == PhaseFailed || phase == PhaseStopped
}

// State is what the supervisor knows of the run (state.json).
type State struct {
	JobID     string     `json:"job_id"`
	Name      string     `json:"name"`
	Run       int        `json:"run"` // 1 for the first start, +1 for each resume
	Phase     string     `json:"phase"`
	Info      string     `json:"info,omitempty"` // the job row's info, or the last status line
	Step      int        `json:"step"`
	Total     int        `json:"total,omitempty"`
	SecPerIt  float64    `json:"seconds_per_step,omitempty"`
	Loss      *float64   `json:"loss,omitempty"`
	LossStep  int        `json:"loss_step,omitempty"`
	LR        float64    `json:"lr,omitempty"`
	ResumedAt int        `json:"resumed_from_step,omitempty"`
	PID       int        `json:"pid,omitempty"`        // the trainer's
	LogOffset int64      `json:"log_offset,omitempty"` // train.log read up to here
	Adopted   bool       `json:"adopted,omitempty"`    // a new supervisor took over a running trainer
	SupPID    int        `json:"supervisor_pid,omitempty"`
	Started   time.Time  `json:"started_at"`
	Updated   time.Time  `json:"updated_at"`
	Ended     *time.Time `json:"ended_at,omitempty"`
	ExitCode  *int       `json:"exit_code,omitempty"`
	Signal    string     `json:"signal,omitempty"`
	Reason    string     `json:"reason,omitempty"` // one line: why it ended
	OOMSkips  int        `json:"oom_skips,omitempty"`
	StopAt    *time.Time `json:"stop_requested_at,omitempty"`
	Escalated string     `json:"stop_escalated,omitempty"` // "", "SIGINT", "SIGKILL"
	// Download is the pre-pull of the base model (Spec.Pull), bytes done of total.
	Download *Download `json:"download,omitempty"`

	Checkpoints []Checkpoint `json:"checkpoints"`
	// Failures are checkpoints that could not be staged (pruned first, never
	// completed): never silent.
	Failures []string `json:"failures,omitempty"`

	// SupervisorAlive is set by `supervise-ctl status` (not stored).
	SupervisorAlive *bool `json:"supervisor_alive,omitempty"`
	// Orphan: the supervisor is gone but its trainer runs on (set by supervise-ctl).
	// A stop then needs a supervisor again, which takes the trainer over.
	Orphan bool `json:"orphan,omitempty"`
}

// Checkpoint is one save the supervisor verified and copied into collect/.
type Checkpoint struct {
	Step     int       `json:"step"` // from the name, or training_info for the final save
	File     string    `json:"file"` // name in the save folder and in collect/
	Final    bool      `json:"final,omitempty"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"`
	Loss     *float64  `json:"loss,omitempty"`
	Samples  []string  `json:"samples,omitempty"` // samples/ names of this step
	StagedAt time.Time `json:"staged_at"`
	Pruned   bool      `json:"pruned,omitempty"` // ai-toolkit removed its original since
}

// JobPaths are the files of a job folder.
type JobPaths struct{ Dir string }

func (p JobPaths) Join(name ...string) string {
	return filepath.Join(append([]string{p.Dir}, name...)...)
}

// ReadSpec reads spec.json.
func ReadSpec(dir string) (*Spec, error) {
	var s Spec
	b, err := os.ReadFile(filepath.Join(dir, SpecFile))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", SpecFile, err)
	}
	if s.Version != specVersion {
		return nil, fmt.Errorf("%s: version %d; this scopectl reads version %d", SpecFile, s.Version, specVersion)
	}
	if s.JobID == "" || s.Name == "" || len(s.Command) == 0 || s.SaveDir == "" {
		return nil, fmt.Errorf("%s: job_id, name, save_dir and command are required", SpecFile)
	}
	return &s, nil
}

// ReadState reads state.json (os.ErrNotExist before the supervisor wrote one).
func ReadState(dir string) (*State, error) {
	return readStateFile(filepath.Join(dir, StateFile))
}

func readStateFile(p string) (*State, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(p), err)
	}
	return &s, nil
}

func writeJSON(path string, v any, perm os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), perm)
}
