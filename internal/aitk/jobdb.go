package aitk

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

// The job database protocol (extensions_built_in/sd_trainer/DiffusionTrainer.py):
// when the file at process.sqlite_db_path exists and AITK_JOB_ID is set, the
// trainer opens a new connection per statement (timeout 30 s, autocommit,
// BEGIN IMMEDIATE for writes, 3 retries after 2/4/8 s on "database is
// locked") and
//
//	writes  UPDATE Job SET status=?, info=? WHERE id=?
//	        UPDATE Job SET step|speed_string|save_now|sample_now = ? WHERE id=?
//	        (values passed through str(): the step arrives as text, so the
//	        column needs INTEGER affinity to read back as a number)
//	reads   SELECT stop|return_to_queue|save_now|sample_now FROM Job WHERE id=?
//	        (compared with == 1, so flags must be stored as integers)
//
// A missing column is not "database is locked" to the trainer: it raises and
// the run dies. CreateJobDB therefore makes every column the trainer touches.

// JobEnv is the variable that names the job row to the trainer.
const JobEnv = "AITK_JOB_ID"

// Job statuses the trainer writes ("queued" after return_to_queue).
const (
	StatusRunning   = "running"
	StatusStopped   = "stopped"
	StatusError     = "error"
	StatusCompleted = "completed"
	StatusQueued    = "queued"
)

// Flag is a control column the trainer polls after every step.
type Flag string

// The control flags. Stop ends the run at the next step boundary with
// status "stopped" (the process then exits with code 1, "Job stopped");
// ReturnToQueue does the same with status "queued"; SaveNow and SampleNow
// save or sample at the next step and are cleared by the trainer.
const (
	FlagStop          Flag = "stop"
	FlagReturnToQueue Flag = "return_to_queue"
	FlagSaveNow       Flag = "save_now"
	FlagSampleNow     Flag = "sample_now"
)

// ErrNoColumn is returned when a job database predates a column (older
// ai-toolkit UI databases lack pid, save_now, sample_now, …).
var ErrNoColumn = errors.New("job database has no such column")

// ErrNoJob is returned when no row has the id.
var ErrNoJob = errors.New("no such job in the job database")

// jobSchema is the UI's Prisma Job model (ui/prisma/schema.prisma) as SQLite
// columns, so the same reader serves a private database and the UI's.
const jobSchema = `CREATE TABLE IF NOT EXISTS "Job" (
	"id" TEXT NOT NULL PRIMARY KEY,
	"name" TEXT NOT NULL,
	"gpu_ids" TEXT NOT NULL DEFAULT '',
	"job_config" TEXT NOT NULL DEFAULT '{}',
	"created_at" INTEGER NOT NULL DEFAULT 0,
	"updated_at" INTEGER NOT NULL DEFAULT 0,
	"status" TEXT NOT NULL DEFAULT 'stopped',
	"stop" BOOLEAN NOT NULL DEFAULT false,
	"return_to_queue" BOOLEAN NOT NULL DEFAULT false,
	"step" INTEGER NOT NULL DEFAULT 0,
	"total_steps" INTEGER,
	"info" TEXT NOT NULL DEFAULT '',
	"speed_string" TEXT NOT NULL DEFAULT '',
	"queue_position" INTEGER NOT NULL DEFAULT 0,
	"pid" INTEGER,
	"job_type" TEXT NOT NULL DEFAULT 'train',
	"job_ref" TEXT,
	"save_now" BOOLEAN NOT NULL DEFAULT false,
	"sample_now" BOOLEAN NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX IF NOT EXISTS "Job_name_key" ON "Job"("name");`

// JobDB is a job database: a private one made by CreateJobDB, or an
// ai-toolkit UI's aitk_db.db opened with OpenJobDB (read it freely; write
// only the control flags, and never insert rows while the UI's worker runs:
// it sends return_to_queue to running jobs it did not start).
type JobDB struct {
	db   *sql.DB
	path string
	cols map[string]bool
}

// busyTimeout is how long one statement waits for a lock; retries add more.
const busyTimeout = 5 * time.Second

func jobDSN(abs string, readOnly bool) string {
	u := url.URL{Path: filepath.ToSlash(abs)}
	if !strings.HasPrefix(u.Path, "/") {
		u.Path = "/" + u.Path
	}
	q := fmt.Sprintf("_pragma=busy_timeout(%d)&_txlock=immediate", busyTimeout.Milliseconds())
	if readOnly {
		q += "&mode=ro"
	}
	return "file://" + u.EscapedPath() + "?" + q
}

// CreateJobDB creates a private job database at path (mode 0600, parent
// folder 0700) with the Job table, or opens it if it exists. It uses the
// rollback journal, not WAL, so it works on network volumes.
func CreateJobDB(ctx context.Context, path string) (*JobDB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	d, err := openJobDB(ctx, abs, false)
	if err != nil {
		return nil, err
	}
	if err := d.retry(ctx, func() error {
		_, err := d.db.ExecContext(ctx, jobSchema)
		return err
	}); err != nil {
		d.Close()
		return nil, fmt.Errorf("job database %s: %w", abs, err)
	}
	if err := d.loadColumns(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// OpenJobDB opens an existing job database (read-only when readOnly), learning
// which columns it has.
func OpenJobDB(ctx context.Context, path string, readOnly bool) (*JobDB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, err
	}
	d, err := openJobDB(ctx, abs, readOnly)
	if err != nil {
		return nil, err
	}
	if err := d.loadColumns(ctx); err != nil {
		d.Close()
		return nil, err
	}
	if !d.cols["id"] {
		d.Close()
		return nil, fmt.Errorf("job database %s: no Job table", abs)
	}
	return d, nil
}

func openJobDB(ctx context.Context, abs string, readOnly bool) (*JobDB, error) {
	db, err := sql.Open("sqlite", jobDSN(abs, readOnly))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("job database %s: %w", abs, err)
	}
	return &JobDB{db: db, path: abs}, nil
}

// Path is the database file.
func (d *JobDB) Path() string { return d.path }

// Close closes the database.
func (d *JobDB) Close() error { return d.db.Close() }

// HasColumn reports whether the Job table has the column.
func (d *JobDB) HasColumn(name string) bool { return d.cols[name] }

func (d *JobDB) loadColumns(ctx context.Context) error {
	return d.retry(ctx, func() error {
		rows, err := d.db.QueryContext(ctx, `PRAGMA table_info("Job")`)
		if err != nil {
			return err
		}
		defer rows.Close()
		cols := map[string]bool{}
		for rows.Next() {
			var (
				cid        int
				name, typ  string
				notnull, p int
				dflt       sql.NullString
			)
			if err := rows.Scan(&cid, &name, &typ, &notnull, &dflt, &p); err != nil {
				return err
			}
			cols[name] = true
		}
		d.cols = cols
		return rows.Err()
	})
}

// isBusy reports a locked database.
func isBusy(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "database is locked") || strings.Contains(s, "SQLITE_BUSY")
}

// retry runs f, retrying a locked database 3 times after 0.5, 1 and 2 s
// (each attempt already waits busyTimeout), like the trainer's own retry.
func (d *JobDB) retry(ctx context.Context, f func() error) error {
	delay := 500 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := f()
		if !isBusy(err) || attempt == 3 {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// NewJob is a row to insert for a run.
type NewJob struct {
	ID         string // becomes AITK_JOB_ID (the trainer strips spaces)
	Name       string // config.name; unique
	GPUIDs     string // e.g. "0"
	JobConfig  string // the config as JSON, for reference
	TotalSteps int
}

// InsertJob adds a job row with status "running" and cleared flags.
func (d *JobDB) InsertJob(ctx context.Context, j NewJob) error {
	if strings.TrimSpace(j.ID) != j.ID || j.ID == "" {
		return fmt.Errorf("job id %q: must be non-empty without surrounding spaces", j.ID)
	}
	now := time.Now().UnixMilli()
	cols := []string{"id", "name"}
	args := []any{j.ID, j.Name}
	add := func(c string, v any) {
		if d.cols[c] {
			cols = append(cols, c)
			args = append(args, v)
		}
	}
	add("gpu_ids", j.GPUIDs)
	add("job_config", orDefault(j.JobConfig, "{}"))
	add("created_at", now)
	add("updated_at", now)
	add("status", StatusRunning)
	add("info", "Starting")
	add("step", 0)
	if j.TotalSteps > 0 {
		add("total_steps", j.TotalSteps)
	}
	for _, f := range []Flag{FlagStop, FlagReturnToQueue, FlagSaveNow, FlagSampleNow} {
		add(string(f), 0)
	}
	q := `INSERT INTO "Job" (` + quoteCols(cols) + `) VALUES (` + strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + `)`
	return d.retry(ctx, func() error {
		_, err := d.db.ExecContext(ctx, q, args...)
		return err
	})
}

func quoteCols(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = `"` + c + `"`
	}
	return strings.Join(q, ",")
}

// JobState is what a job row says about its run.
type JobState struct {
	ID             string  `json:"id"`
	Name           string  `json:"name,omitempty"`
	Status         string  `json:"status"`
	Info           string  `json:"info"`
	Step           int     `json:"step"`
	TotalSteps     int     `json:"total_steps,omitempty"`
	SpeedString    string  `json:"speed_string,omitempty"`
	SecondsPerStep float64 `json:"seconds_per_step,omitempty"` // from speed_string
	Stop           bool    `json:"stop"`
	ReturnToQueue  bool    `json:"return_to_queue"`
	SaveNow        bool    `json:"save_now"`
	SampleNow      bool    `json:"sample_now"`
	PID            int     `json:"pid,omitempty"`
	// Missing lists the columns this database predates.
	Missing []string `json:"missing,omitempty"`
}

// Stopping reports the UI's derived "stopping" state.
func (s JobState) Stopping() bool {
	return s.Status == "stopping" || (s.Stop && s.Status == StatusRunning)
}

var stateCols = []string{"name", "status", "info", "step", "total_steps", "speed_string", "stop", "return_to_queue", "save_now", "sample_now", "pid"}

// Job reads a job row. Columns the database lacks read as zero and are
// listed in Missing; values stored as text (the trainer writes str(value))
// are converted.
func (d *JobDB) Job(ctx context.Context, id string) (JobState, error) {
	st := JobState{ID: id}
	var cols []string
	for _, c := range stateCols {
		if d.cols[c] {
			cols = append(cols, c)
		} else {
			st.Missing = append(st.Missing, c)
		}
	}
	if len(cols) == 0 {
		return st, fmt.Errorf("%w: the Job table has none of %s", ErrNoColumn, strings.Join(stateCols, ", "))
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	err := d.retry(ctx, func() error {
		return d.db.QueryRowContext(ctx, `SELECT `+quoteCols(cols)+` FROM "Job" WHERE "id" = ?`, id).Scan(ptrs...)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("%w: %s", ErrNoJob, id)
	}
	if err != nil {
		return st, err
	}
	for i, c := range cols {
		v := vals[i]
		switch c {
		case "name":
			st.Name = asString(v)
		case "status":
			st.Status = asString(v)
		case "info":
			st.Info = asString(v)
		case "speed_string":
			st.SpeedString = asString(v)
			st.SecondsPerStep, _ = ParseSpeed(st.SpeedString)
		case "step":
			st.Step = asInt(v)
		case "total_steps":
			st.TotalSteps = asInt(v)
		case "pid":
			st.PID = asInt(v)
		case "stop":
			st.Stop = asInt(v) == 1
		case "return_to_queue":
			st.ReturnToQueue = asInt(v) == 1
		case "save_now":
			st.SaveNow = asInt(v) == 1
		case "sample_now":
			st.SampleNow = asInt(v) == 1
		}
	}
	return st, nil
}

func asString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

func asInt(v any) int {
	switch x := v.(type) {
	case int64:
		return int(x)
	case float64:
		return int(x)
	case bool:
		if x {
			return 1
		}
		return 0
	case string, []byte:
		s := strings.TrimSpace(asString(x))
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return int(f)
		}
		switch strings.ToLower(s) {
		case "true":
			return 1
		}
	}
	return 0
}

// SetFlag sets or clears a control flag (stored as the integer the trainer
// compares with 1). A database without the column returns ErrNoColumn:
// that ai-toolkit version does not poll it.
func (d *JobDB) SetFlag(ctx context.Context, id string, f Flag, on bool) error {
	switch f {
	case FlagStop, FlagReturnToQueue, FlagSaveNow, FlagSampleNow:
	default:
		return fmt.Errorf("unknown job flag %q", f)
	}
	if !d.cols[string(f)] {
		return fmt.Errorf("%w: %s", ErrNoColumn, f)
	}
	v := 0
	if on {
		v = 1
	}
	set := `"` + string(f) + `" = ?`
	args := []any{v}
	if d.cols["updated_at"] {
		set += `, "updated_at" = ?`
		args = append(args, time.Now().UnixMilli())
	}
	args = append(args, id)
	return d.retry(ctx, func() error {
		res, err := d.db.ExecContext(ctx, `UPDATE "Job" SET `+set+` WHERE "id" = ?`, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", ErrNoJob, id)
		}
		return nil
	})
}

// ParseSpeed reads the trainer's speed_string ("2.50 iter/sec" or
// "3.20 sec/iter") as seconds per step.
func ParseSpeed(s string) (float64, bool) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || v != v || v > 1e12 {
		return 0, false
	}
	switch strings.TrimSpace(unit) {
	case "sec/iter":
		return v, true
	case "iter/sec":
		return 1 / v, true
	}
	return 0, false
}
