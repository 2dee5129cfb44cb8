package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Collected is one checkpoint brought into the library.
type Collected struct {
	Checkpoint
	Name    string   `json:"name"` // library entry
	Samples []string `json:"samples_added,omitempty"`
	New     bool     `json:"new"` // collected by this call
}

// CollectResult is what Collect did.
type CollectResult struct {
	JobID       string      `json:"job_id"`
	Phase       string      `json:"phase"`
	Checkpoints []Collected `json:"checkpoints"`
	Failures    []string    `json:"failures,omitempty"` // checkpoints lost on the machine
	State       *State      `json:"-"`
}

// Collect pulls every checkpoint the supervisor staged and the library lacks
// (resumable, sha256-verified), adds it with its lineage (job, step, base model;
// config and dataset hashes and loss in the job's records) and its samples.
func (t *Trainer) Collect(ctx context.Context, id string) (*CollectResult, error) {
	job, st, err := t.current(ctx, id)
	if err != nil {
		return nil, err
	}
	return t.collect(ctx, job, st)
}

func (t *Trainer) collect(ctx context.Context, job store.TrainJob, st *State) (*CollectResult, error) {
	res := &CollectResult{JobID: job.ID, Phase: st.Phase, Failures: st.Failures, State: st, Checkpoints: []Collected{}}
	have, err := t.Jobs.ListTrainCheckpoints(ctx, job.ID)
	if err != nil {
		return res, err
	}
	done := map[string]store.TrainCheckpoint{}
	for _, c := range have {
		done[c.File] = c
	}
	var cr, sr remote.Remote
	defer func() {
		for _, r := range []remote.Remote{cr, sr} {
			if r != nil {
				r.Close()
			}
		}
	}()
	stage := filepath.Join(filepath.Dir(t.Lib.BlobDir), "train", job.ID)
	for _, c := range st.Checkpoints {
		col := Collected{Checkpoint: c}
		if prev, ok := done[c.File]; ok && prev.SHA256 == c.SHA256 {
			if e, err := t.Lib.Store.GetBySHA(ctx, c.SHA256); err == nil {
				col.Name = e.Name
				res.Checkpoints = append(res.Checkpoints, col)
				continue
			}
		}
		if cr == nil {
			if cr, err = t.openJob(ctx, job, path.Join(job.JobDir, CollectDir)); err != nil {
				return res, err
			}
		}
		local := filepath.Join(stage, c.File)
		if err := fetchVerified(ctx, cr, c.File, c.Size, c.SHA256, local, t.Progress); err != nil {
			return res, fmt.Errorf("collect %s: %w", c.File, err)
		}
		name, err := t.addCheckpoint(ctx, job, c, local)
		if err != nil {
			return res, err
		}
		os.Remove(local)
		if err := t.Jobs.PutTrainCheckpoint(ctx, store.TrainCheckpoint{JobID: job.ID, File: c.File, Step: c.Step, SHA256: c.SHA256, Size: c.Size, Loss: c.Loss}); err != nil {
			return res, err
		}
		col.Name, col.New = name, true
		t.note("collected %s (step %d) as %s", c.File, c.Step, name)
		res.Checkpoints = append(res.Checkpoints, col)
	}
	// Samples of each step, once, tied to that step's LoRA.
	for i, col := range res.Checkpoints {
		if len(col.Checkpoint.Samples) == 0 { // the step's samples on the machine (col.Samples: those added now)
			continue
		}
		known := map[string]bool{}
		if sms, err := t.Lib.Store.ListSamples(ctx, col.SHA256); err == nil {
			for _, sm := range sms {
				known[sm.Name] = true
			}
		}
		for _, name := range col.Checkpoint.Samples {
			if known[name] {
				continue
			}
			if sr == nil {
				if sr, err = t.openJob(ctx, job, path.Join(job.SaveDir, "samples")); err != nil {
					return res, err
				}
			}
			local := filepath.Join(stage, "samples", name)
			if err := fetchVerified(ctx, sr, name, -1, "", local, progress.Reporter{}); err != nil {
				t.note("sample %s: %v", name, err)
				continue
			}
			if _, err := t.Lib.AddSample(ctx, local, name, col.SHA256, "training:"+job.ID); err != nil {
				t.note("sample %s: %v", name, err)
			} else {
				res.Checkpoints[i].Samples = append(res.Checkpoints[i].Samples, name)
			}
			os.Remove(local)
		}
	}
	return res, nil
}

// addCheckpoint adds a fetched checkpoint to the library under its file name (made
// unique with the sha256 when another LoRA holds it).
func (t *Trainer) addCheckpoint(ctx context.Context, job store.TrainJob, c Checkpoint, local string) (string, error) {
	name := strings.TrimSuffix(c.File, ".safetensors")
	origin := store.Origin{Kind: "training", Job: job.ID, Step: int64(c.Step), Path: job.Target + path.Join(job.SaveDir, c.File), BaseModel: job.BaseModel}
	if other, err := t.Lib.Store.GetLoRA(ctx, name); err == nil && other.Name == name && other.SHA256 != c.SHA256 {
		name += "-" + c.SHA256[:8]
	}
	r, err := t.Lib.Add(ctx, local, library.AddOptions{Name: name, Origin: origin, Link: true})
	if err != nil {
		return "", err
	}
	return r.LoRA.Name, nil
}

// fetchVerified downloads name into local, continuing a partial download, and checks
// the size and sha256 when given (size < 0, sha "": unchecked); prog follows the bytes
// (as op "collect").
func fetchVerified(ctx context.Context, r remote.Remote, name string, size int64, sha, local string, prog progress.Reporter) error {
	if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
		return err
	}
	part := local + ".part"
	for attempt := 0; attempt < 2; attempt++ {
		var off int64
		if fi, err := os.Stat(part); err == nil {
			off = fi.Size()
		}
		if size >= 0 && off > size {
			os.Remove(part)
			off = 0
		}
		if size < 0 || off < size {
			if size < 0 {
				os.Remove(part)
				off = 0
			}
			f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				return err
			}
			rc, err := r.Get(ctx, name, off)
			if err != nil {
				f.Close()
				return err
			}
			tr := prog.Start("collect", name, max(size, 0))
			tr.Add(off)
			_, err = io.Copy(io.MultiWriter(f, tr), rc)
			tr.Finish()
			rc.Close()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err // the partial file stays for the next attempt
			}
		}
		if sha == "" {
			return os.Rename(part, local)
		}
		got, n, err := FileSHA256(part)
		if err != nil {
			return err
		}
		if got == sha && (size < 0 || n == size) {
			return os.Rename(part, local)
		}
		os.Remove(part) // bad bytes: start over once
	}
	return fmt.Errorf("%s: %w after a fresh download", name, remote.ErrHashMismatch)
}

// WatchOptions tune Watch.
type WatchOptions struct {
	Interval time.Duration // default 10s
	// OnState is called with every state seen (progress display).
	OnState func(*State)
	// OnCollect is called after each collection that added something.
	OnCollect func(*CollectResult)
	// StopMachine is called at the end unless the job keeps its machine (pods).
	StopMachine func(ctx context.Context, job store.TrainJob) error
	// PodGone says, when the job's machine cannot be reached, whether its pod was
	// stopped or terminated (and how, in a few words): the end of this watch.
	PodGone func(ctx context.Context, job store.TrainJob) (how string, gone bool)
}

// ErrPodGone: the job's pod stopped or was terminated before the job ended.
var ErrPodGone = errors.New("pod gone")

// Watch follows a job to its end, collecting checkpoints as they are staged, and
// returns the final collection. Connection failures are retried until ctx ends: the
// job runs on without us.
func (t *Trainer) Watch(ctx context.Context, id string, opt WatchOptions) (*CollectResult, error) {
	if opt.Interval <= 0 {
		opt.Interval = 10 * time.Second
	}
	job, err := t.Jobs.GetTrainJob(ctx, id)
	if err != nil {
		return nil, err
	}
	var last *CollectResult
	var m *machine
	defer func() {
		if m != nil {
			m.Close()
		}
	}()
	for {
		var st *State
		if m == nil {
			m, err = t.connectJob(ctx, job)
		}
		if err == nil {
			st, err = t.peek(ctx, m, job)
			if err != nil {
				m.Close()
				m = nil
			}
		}
		if err == nil {
			t.record(ctx, &job, st)
			if opt.OnState != nil {
				opt.OnState(st)
			}
			var res *CollectResult
			res, err = t.collect(ctx, job, st)
			if err == nil {
				last = res
				if opt.OnCollect != nil {
					for _, c := range res.Checkpoints {
						if c.New {
							opt.OnCollect(res)
							break
						}
					}
				}
				if !Terminal(st.Phase) && st.SupervisorAlive != nil && !*st.SupervisorAlive {
					// Not an end: the machine rebooted or the supervisor died. The pod is
					// left alone (a trainer may still run there).
					return res, fmt.Errorf("job %s: the supervisor is not running (phase %s); `scopectl train resume %s` starts it again (taking over a trainer still running)", job.ID, st.Phase, job.ID)
				}
				if Terminal(st.Phase) {
					if opt.StopMachine != nil && job.PodID != "" && !job.Keep {
						if err := opt.StopMachine(ctx, job); err != nil {
							return res, fmt.Errorf("job ended (%s) but the pod was not stopped: %w", st.Phase, err)
						}
					}
					return res, nil
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			if opt.PodGone != nil && job.PodID != "" {
				if how, gone := opt.PodGone(ctx, job); gone {
					n := 0
					if have, lerr := t.Jobs.ListTrainCheckpoints(ctx, job.ID); lerr == nil {
						n = len(have)
					}
					return last, fmt.Errorf("%w: job %s: pod %s %s mid-run; the %d checkpoint(s) collected so far are in the library; `scopectl train resume %s --pod NEW_POD` continues from the newest: %w",
						ErrPodGone, job.ID, job.PodID, how, n, job.ID, err)
				}
			}
			t.note("watch: %v (retrying)", err)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(opt.Interval):
		}
	}
}

// staleAfter is how old state.json may be before the supervisor is asked whether it
// still runs (it rewrites the file every poll).
const staleAfter = 2 * time.Minute

// peek reads state.json over the open connection (a file read, no command run);
// a state that has not changed for staleAfter is checked with supervise-ctl, which
// knows whether the supervisor holds its lock.
func (t *Trainer) peek(ctx context.Context, m *machine, job store.TrainJob) (*State, error) {
	rc, err := m.remote.Get(ctx, StateFile, 0)
	if err == nil {
		b, rerr := io.ReadAll(io.LimitReader(rc, 64<<20))
		rc.Close()
		var st State
		if rerr == nil && json.Unmarshal(b, &st) == nil && (Terminal(st.Phase) || time.Since(st.Updated) < staleAfter) {
			return &st, nil
		}
	}
	return t.ctl(ctx, job, CtlStatus)
}
