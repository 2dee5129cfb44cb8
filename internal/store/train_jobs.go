package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TrainJob is a training job scopectl started: where it runs and what it trains.
type TrainJob struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`   // config.name
	Target     string     `json:"target"` // ssh://user@host:port of the machine
	PodID      string     `json:"pod_id,omitempty"`
	Workspace  string     `json:"workspace"`
	JobDir     string     `json:"job_dir"` // on the machine
	Binary     string     `json:"binary"`  // scopectl on the machine
	SaveDir    string     `json:"save_dir,omitempty"`
	ConfigPath string     `json:"config_path,omitempty"` // the local config it was started from
	ConfigSHA  string     `json:"config_sha256,omitempty"`
	DatasetSHA string     `json:"dataset_sha256,omitempty"`
	BaseModel  string     `json:"base_model,omitempty"`
	Steps      int        `json:"steps,omitempty"`
	CostPerHr  float64    `json:"cost_per_hr,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	Phase      string     `json:"phase,omitempty"` // as last seen
	Step       int        `json:"step,omitempty"`
	UpdatedAt  *time.Time `json:"updated_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	Preview    string     `json:"preview,omitempty"` // a Scope deploy collected checkpoints go to
	Keep       bool       `json:"keep,omitempty"`    // leave the pod running at the end
	// Kubeconfig is the kubeconfig a job on Kubernetes was run with: an absolute path,
	// or a list of them as in KUBECONFIG ("": the default at the time of use). Only
	// the path, never the file's content.
	Kubeconfig string `json:"kubeconfig,omitempty"`
}

// TrainCheckpoint is a checkpoint collected from a job into the library.
type TrainCheckpoint struct {
	JobID       string    `json:"job_id"`
	File        string    `json:"file"`
	Step        int       `json:"step"`
	SHA256      string    `json:"sha256"`
	Size        int64     `json:"size"`
	Loss        *float64  `json:"loss,omitempty"`
	CollectedAt time.Time `json:"collected_at"`
}

// TrainStore is implemented by stores that record training jobs.
type TrainStore interface {
	PutTrainJob(ctx context.Context, j TrainJob) error
	GetTrainJob(ctx context.Context, id string) (TrainJob, error) // by id, or a unique id prefix
	ListTrainJobs(ctx context.Context) ([]TrainJob, error)
	// SetTrainJobState records what a job's machine last said (phase, step, end),
	// leaving the rest of the record as it is.
	SetTrainJobState(ctx context.Context, id, phase string, step int, ended *time.Time) error
	PutTrainCheckpoint(ctx context.Context, c TrainCheckpoint) error
	ListTrainCheckpoints(ctx context.Context, jobID string) ([]TrainCheckpoint, error)
}

const trainJobCols = `id, name, target, pod_id, workspace, job_dir, binary, save_dir, config_path, config_sha, dataset_sha, base_model, steps, cost_per_hr, started_at, phase, step, updated_at, ended_at, preview, keep, kubeconfig`

// PutTrainJob inserts or replaces a training job by id.
func (s *SQLite) PutTrainJob(ctx context.Context, j TrainJob) error {
	if j.ID == "" || j.Target == "" || j.JobDir == "" {
		return errors.New("a training job needs an id, a target and a job folder")
	}
	if j.StartedAt.IsZero() {
		j.StartedAt = time.Now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO train_jobs (`+trainJobCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.ID, j.Name, j.Target, j.PodID, j.Workspace, j.JobDir, j.Binary, j.SaveDir, j.ConfigPath, j.ConfigSHA, j.DatasetSHA,
		j.BaseModel, j.Steps, j.CostPerHr, fmtTime(j.StartedAt), j.Phase, j.Step, optTime(j.UpdatedAt), optTime(j.EndedAt), j.Preview, j.Keep, j.Kubeconfig)
	return err
}

func scanTrainJob(r scanner) (TrainJob, error) {
	var j TrainJob
	var started string
	var upd, end sql.NullString
	if err := r.Scan(&j.ID, &j.Name, &j.Target, &j.PodID, &j.Workspace, &j.JobDir, &j.Binary, &j.SaveDir, &j.ConfigPath, &j.ConfigSHA,
		&j.DatasetSHA, &j.BaseModel, &j.Steps, &j.CostPerHr, &started, &j.Phase, &j.Step, &upd, &end, &j.Preview, &j.Keep, &j.Kubeconfig); err != nil {
		return j, err
	}
	j.StartedAt, _ = parseTime(started)
	for _, x := range []struct {
		s  sql.NullString
		to **time.Time
	}{{upd, &j.UpdatedAt}, {end, &j.EndedAt}} {
		if x.s.Valid {
			if t, err := parseTime(x.s.String); err == nil {
				*x.to = &t
			}
		}
	}
	return j, nil
}

// GetTrainJob finds a job by id, or by a prefix of exactly one id.
func (s *SQLite) GetTrainJob(ctx context.Context, id string) (TrainJob, error) {
	if id == "" {
		return TrainJob{}, fmt.Errorf("training job: empty id: %w", ErrNotFound)
	}
	j, err := scanTrainJob(s.db.QueryRowContext(ctx, `SELECT `+trainJobCols+` FROM train_jobs WHERE id = ?`, id))
	if err == nil {
		return j, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return j, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+trainJobCols+` FROM train_jobs WHERE id LIKE ? ESCAPE '\' ORDER BY id`,
		strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(id)+"%")
	if err != nil {
		return TrainJob{}, err
	}
	defer rows.Close()
	var found []TrainJob
	for rows.Next() {
		j, err := scanTrainJob(rows)
		if err != nil {
			return TrainJob{}, err
		}
		found = append(found, j)
	}
	switch len(found) {
	case 0:
		return TrainJob{}, fmt.Errorf("training job %q: %w", id, ErrNotFound)
	case 1:
		return found[0], rows.Err()
	}
	return TrainJob{}, fmt.Errorf("training job %q: %w (%d jobs start so)", id, ErrAmbiguous, len(found))
}

// ListTrainJobs returns the jobs, newest first.
func (s *SQLite) ListTrainJobs(ctx context.Context) ([]TrainJob, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+trainJobCols+` FROM train_jobs ORDER BY started_at DESC, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []TrainJob{}
	for rows.Next() {
		j, err := scanTrainJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// SetTrainJobState updates the last seen phase, step and end of a job.
func (s *SQLite) SetTrainJobState(ctx context.Context, id, phase string, step int, ended *time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE train_jobs SET phase = ?, step = ?, updated_at = ?, ended_at = ? WHERE id = ?`,
		phase, step, fmtTime(time.Now()), optTime(ended), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("training job %q: %w", id, ErrNotFound)
	}
	return nil
}

// PutTrainCheckpoint records (replacing) a collected checkpoint.
func (s *SQLite) PutTrainCheckpoint(ctx context.Context, c TrainCheckpoint) error {
	if c.CollectedAt.IsZero() {
		c.CollectedAt = time.Now()
	}
	var loss any
	if c.Loss != nil {
		loss = *c.Loss
	}
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO train_checkpoints (job_id, file, step, sha256, size, loss, collected_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, c.JobID, c.File, c.Step, strings.ToLower(c.SHA256), c.Size, loss, fmtTime(c.CollectedAt))
	return err
}

// ListTrainCheckpoints returns a job's collected checkpoints by step.
func (s *SQLite) ListTrainCheckpoints(ctx context.Context, jobID string) ([]TrainCheckpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT job_id, file, step, sha256, size, loss, collected_at FROM train_checkpoints
		WHERE job_id = ? ORDER BY step, file`, jobID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []TrainCheckpoint{}
	for rows.Next() {
		var c TrainCheckpoint
		var loss sql.NullFloat64
		var at string
		if err := rows.Scan(&c.JobID, &c.File, &c.Step, &c.SHA256, &c.Size, &loss, &at); err != nil {
			return nil, err
		}
		if loss.Valid {
			v := loss.Float64
			c.Loss = &v
		}
		c.CollectedAt, _ = parseTime(at)
		out = append(out, c)
	}
	return out, rows.Err()
}
