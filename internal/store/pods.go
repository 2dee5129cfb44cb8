package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Pod is a pod scopectl created (or is creating). RequestID is written before the
// provider is asked, so a crash between asking and answering is recoverable.
type Pod struct {
	RequestID      string        `json:"request_id"`
	Provider       string        `json:"provider"`
	ID             string        `json:"id"`
	Name           string        `json:"name"`
	GPUType        string        `json:"gpu_type,omitempty"`
	GPUCount       int           `json:"gpu_count,omitempty"`
	Address        string        `json:"address,omitempty"`   // a machine scopectl did not rent (provider ssh): ssh://user@host:port
	Container      string        `json:"container,omitempty"` // there, the container that runs Scope
	CostPerHr      float64       `json:"cost_per_hr,omitempty"`
	CreatedAt      time.Time     `json:"created_at"`
	IdleStop       time.Duration `json:"idle_stop"`
	MaxHours       float64       `json:"max_hours"`
	LastSeenStatus string        `json:"last_seen_status"`
	LastSeenAt     *time.Time    `json:"last_seen_at,omitempty"`
	TerminatedAt   *time.Time    `json:"terminated_at,omitempty"`
}

// PodStore is implemented by stores that record pods.
type PodStore interface {
	PutPod(ctx context.Context, p Pod) error
	GetPod(ctx context.Context, ref string) (Pod, error) // by request id or pod id
	ListPods(ctx context.Context, liveOnly bool) ([]Pod, error)
}

func optTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return fmtTime(*t)
}

// PutPod inserts or replaces a pod by request id.
func (s *SQLite) PutPod(ctx context.Context, p Pod) error {
	if p.RequestID == "" || p.Provider == "" {
		return errors.New("pod needs a request id and a provider")
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	var id any
	if p.ID != "" {
		id = p.ID
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO pods (request_id, provider, id, name, gpu_type, cost_per_hr, created_at, idle_stop_s, max_hours, last_seen_status, last_seen_at, terminated_at, address, gpu_count, container)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (request_id) DO UPDATE SET provider = excluded.provider, id = excluded.id, name = excluded.name,
			gpu_type = excluded.gpu_type, cost_per_hr = excluded.cost_per_hr, idle_stop_s = excluded.idle_stop_s,
			max_hours = excluded.max_hours, last_seen_status = excluded.last_seen_status,
			last_seen_at = excluded.last_seen_at, terminated_at = excluded.terminated_at,
			address = excluded.address, gpu_count = excluded.gpu_count, container = excluded.container`,
		p.RequestID, p.Provider, id, p.Name, p.GPUType, p.CostPerHr, fmtTime(p.CreatedAt), int64(p.IdleStop/time.Second),
		p.MaxHours, p.LastSeenStatus, optTime(p.LastSeenAt), optTime(p.TerminatedAt), p.Address, p.GPUCount, p.Container)
	return err
}

const podCols = `request_id, provider, id, name, gpu_type, cost_per_hr, created_at, idle_stop_s, max_hours, last_seen_status, last_seen_at, terminated_at, address, gpu_count, container`

func scanPod(r scanner) (Pod, error) {
	var p Pod
	var id, seen, term sql.NullString
	var created string
	var idle int64
	if err := r.Scan(&p.RequestID, &p.Provider, &id, &p.Name, &p.GPUType, &p.CostPerHr, &created, &idle, &p.MaxHours, &p.LastSeenStatus, &seen, &term, &p.Address, &p.GPUCount, &p.Container); err != nil {
		return p, err
	}
	p.ID = id.String
	p.IdleStop = time.Duration(idle) * time.Second
	var err error
	if p.CreatedAt, err = parseTime(created); err != nil {
		return p, err
	}
	for _, x := range []struct {
		s   sql.NullString
		dst **time.Time
	}{{seen, &p.LastSeenAt}, {term, &p.TerminatedAt}} {
		if x.s.Valid {
			t, err := parseTime(x.s.String)
			if err != nil {
				return p, err
			}
			*x.dst = &t
		}
	}
	return p, nil
}

// GetPod finds a pod by request id or provider pod id.
func (s *SQLite) GetPod(ctx context.Context, ref string) (Pod, error) {
	p, err := scanPod(s.db.QueryRowContext(ctx, `SELECT `+podCols+` FROM pods WHERE request_id = ? OR id = ? ORDER BY created_at DESC LIMIT 1`, ref, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("pod %q: %w", ref, ErrNotFound)
	}
	return p, err
}

// ListPods lists pods, newest first; liveOnly leaves out terminated ones.
func (s *SQLite) ListPods(ctx context.Context, liveOnly bool) ([]Pod, error) {
	q := `SELECT ` + podCols + ` FROM pods`
	if liveOnly {
		q += ` WHERE terminated_at IS NULL`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at DESC`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pod
	for rows.Next() {
		p, err := scanPod(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
