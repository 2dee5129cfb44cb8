package aitk

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LossLogName is the metrics database ai-toolkit's UILogger writes in the
// job's output folder when logging.use_ui_logger is true
// (toolkit/logging_aitk.py): WAL, tables
//
//	steps(step INTEGER PRIMARY KEY, wall_time REAL NOT NULL)
//	metric_keys(key TEXT PRIMARY KEY, first_seen_step INTEGER, last_seen_step INTEGER)
//	metrics(step INTEGER NOT NULL, key TEXT NOT NULL, value_real REAL, value_text TEXT,
//	        PRIMARY KEY(step, key))
//
// Keys: learning_rate, loss/<name> (loss/loss for the SD trainer), val/loss.
// On a resume the rows past the resume step are deleted, so a reader that
// polls with a step offset must accept the series going back.
const LossLogName = "loss_log.db"

// LossLog reads a loss_log.db; it never writes.
type LossLog struct {
	db *sql.DB
	j  *JobDB // for retry
}

// OpenLossLog opens path read-only. A WAL database opened read-only needs
// its -shm file or a writable folder; ai-toolkit keeps both while it runs.
func OpenLossLog(ctx context.Context, path string) (*LossLog, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, err
	}
	j, err := openJobDB(ctx, abs, true)
	if err != nil {
		return nil, err
	}
	return &LossLog{db: j.db, j: j}, nil
}

// Close closes the database.
func (l *LossLog) Close() error { return l.db.Close() }

// MetricKey is one logged series.
type MetricKey struct {
	Key       string `json:"key"`
	FirstStep int    `json:"first_step"`
	LastStep  int    `json:"last_step"`
}

// Keys lists the series, by name.
func (l *LossLog) Keys(ctx context.Context) ([]MetricKey, error) {
	var out []MetricKey
	err := l.j.retry(ctx, func() error {
		out = nil
		rows, err := l.db.QueryContext(ctx, `SELECT key, COALESCE(first_seen_step, 0), COALESCE(last_seen_step, 0) FROM metric_keys ORDER BY key`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k MetricKey
			if err := rows.Scan(&k.Key, &k.FirstStep, &k.LastStep); err != nil {
				return err
			}
			out = append(out, k)
		}
		return rows.Err()
	})
	return out, noTable(err)
}

// Point is one value of a series. Value is NaN-free: a row whose value was
// stored as text (or NULL, as SQLite stores NaN) has Text set or Null true.
type Point struct {
	Step     int     `json:"step"`
	WallTime float64 `json:"wall_time"` // Unix seconds; 0 if the steps row is gone
	Value    float64 `json:"value"`
	Text     string  `json:"text,omitempty"`
	Null     bool    `json:"null,omitempty"`
}

// SeriesOptions select points.
type SeriesOptions struct {
	SinceStep int // only steps > SinceStep (use -1 for all)
	Limit     int // at most this many points (0: 20000, the UI's cap)
}

// Series returns the points of key after opts.SinceStep, in step order.
func (l *LossLog) Series(ctx context.Context, key string, opts SeriesOptions) ([]Point, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 20000
	}
	var out []Point
	err := l.j.retry(ctx, func() error {
		out = nil
		rows, err := l.db.QueryContext(ctx, `SELECT m.step, COALESCE(s.wall_time, 0), m.value_real, m.value_text
			FROM metrics m LEFT JOIN steps s ON s.step = m.step
			WHERE m.key = ? AND m.step > ? ORDER BY m.step LIMIT ?`, key, opts.SinceStep, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p Point
			var vr sql.NullFloat64
			var vt sql.NullString
			if err := rows.Scan(&p.Step, &p.WallTime, &vr, &vt); err != nil {
				return err
			}
			switch {
			case vr.Valid:
				p.Value = vr.Float64
			case vt.Valid:
				p.Text = vt.String
			default:
				p.Null = true
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	return out, noTable(err)
}

// LastStep is the highest step logged (-1 when none).
func (l *LossLog) LastStep(ctx context.Context) (int, error) {
	var n sql.NullInt64
	err := l.j.retry(ctx, func() error {
		return l.db.QueryRowContext(ctx, `SELECT MAX(step) FROM steps`).Scan(&n)
	})
	if err != nil {
		return -1, noTable(err)
	}
	if !n.Valid {
		return -1, nil
	}
	return int(n.Int64), nil
}

// ErrNoLossLog means the file exists but the UILogger has not made its
// tables yet (it creates them on the first logged step).
var ErrNoLossLog = errors.New("loss log has no tables yet")

func noTable(err error) error {
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return fmt.Errorf("%w: %v", ErrNoLossLog, err)
	}
	return err
}
