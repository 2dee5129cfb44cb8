package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Run is one row of the cost ledger: a pod ran from StartedAt to EndedAt (nil: it
// still runs, as last seen at SeenAt) at CostPerHr. A price change mid-run ends one
// row and starts the next.
type Run struct {
	Provider        string     `json:"provider"`
	PodID           string     `json:"pod_id"`
	StartedAt       time.Time  `json:"started_at"`
	RequestID       string     `json:"request_id,omitempty"`
	Name            string     `json:"name,omitempty"`
	Job             string     `json:"job,omitempty"` // the training job the pod ran, if any
	GPUType         string     `json:"gpu_type,omitempty"`
	CostPerHr       float64    `json:"cost_per_hr"`
	VolumeGB        int        `json:"volume_gb,omitempty"`
	NetworkVolumeID string     `json:"network_volume_id,omitempty"`
	SeenAt          time.Time  `json:"seen_at"` // last seen running
	EndedAt         *time.Time `json:"ended_at,omitempty"`
	EndSource       string     `json:"end_source,omitempty"` // scopectl | watch | guard | observed | price
	EndReason       string     `json:"end_reason,omitempty"`
	IdleSeconds     float64    `json:"idle_seconds,omitempty"` // idle time before an idle stop
}

// LedgerStore is implemented by stores that keep the cost ledger.
type LedgerStore interface {
	// AddRun inserts r unless a row with its key (provider, pod id, start) exists;
	// added says which. Rows are never deleted.
	AddRun(ctx context.Context, r Run) (added bool, err error)
	// UpdateRun rewrites the row with r's key.
	UpdateRun(ctx context.Context, r Run) error
	// Runs lists rows that overlap [since, ∞) (all with a zero since), oldest first.
	Runs(ctx context.Context, since time.Time) ([]Run, error)
	// OpenRuns lists the rows of provider that have no end.
	OpenRuns(ctx context.Context, provider string) ([]Run, error)
}

const runCols = `provider, pod_id, started_at, request_id, name, job, gpu_type, cost_per_hr, volume_gb, network_volume_id, seen_at, ended_at, end_source, end_reason, idle_seconds`

func runArgs(r Run) []any {
	return []any{r.Provider, r.PodID, fmtTime(r.StartedAt), r.RequestID, r.Name, r.Job, r.GPUType, r.CostPerHr, r.VolumeGB,
		r.NetworkVolumeID, fmtTime(r.SeenAt), optTime(r.EndedAt), r.EndSource, r.EndReason, r.IdleSeconds}
}

// AddRun implements LedgerStore.
func (s *SQLite) AddRun(ctx context.Context, r Run) (bool, error) {
	if r.Provider == "" || r.PodID == "" || r.StartedAt.IsZero() {
		return false, errors.New("ledger: a run needs a provider, a pod id and a start")
	}
	res, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO pod_runs (`+runCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, runArgs(r)...)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// UpdateRun implements LedgerStore.
func (s *SQLite) UpdateRun(ctx context.Context, r Run) error {
	a := runArgs(r)
	_, err := s.db.ExecContext(ctx, `UPDATE pod_runs SET request_id = ?, name = ?, job = ?, gpu_type = ?, cost_per_hr = ?, volume_gb = ?,
		network_volume_id = ?, seen_at = ?, ended_at = ?, end_source = ?, end_reason = ?, idle_seconds = ?
		WHERE provider = ? AND pod_id = ? AND started_at = ?`, append(a[3:], a[0], a[1], a[2])...)
	return err
}

// Runs implements LedgerStore.
func (s *SQLite) Runs(ctx context.Context, since time.Time) ([]Run, error) {
	q, args := `SELECT `+runCols+` FROM pod_runs`, []any{}
	if !since.IsZero() {
		q += ` WHERE ended_at IS NULL OR ended_at >= ?`
		args = append(args, fmtTime(since))
	}
	return s.queryRuns(ctx, q+` ORDER BY started_at, pod_id`, args...)
}

// OpenRuns implements LedgerStore.
func (s *SQLite) OpenRuns(ctx context.Context, provider string) ([]Run, error) {
	return s.queryRuns(ctx, `SELECT `+runCols+` FROM pod_runs WHERE provider = ? AND ended_at IS NULL ORDER BY started_at`, provider)
}

func (s *SQLite) queryRuns(ctx context.Context, q string, args ...any) ([]Run, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		var r Run
		var start, seen string
		var end sql.NullString
		if err := rows.Scan(&r.Provider, &r.PodID, &start, &r.RequestID, &r.Name, &r.Job, &r.GPUType, &r.CostPerHr, &r.VolumeGB,
			&r.NetworkVolumeID, &seen, &end, &r.EndSource, &r.EndReason, &r.IdleSeconds); err != nil {
			return nil, err
		}
		if r.StartedAt, err = parseTime(start); err != nil {
			return nil, err
		}
		if r.SeenAt, err = parseTime(seen); err != nil {
			return nil, err
		}
		if end.Valid {
			t, err := parseTime(end.String)
			if err != nil {
				return nil, err
			}
			r.EndedAt = &t
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
