package store

import (
	"context"
	"errors"
	"strings"
	"time"
)

// PutSample implements Store.
func (s *SQLite) PutSample(ctx context.Context, sm Sample) error {
	if sm.SHA256 == "" || sm.Name == "" || sm.Path == "" {
		return errors.New("a sample needs a sha256, a name and a path")
	}
	if sm.AddedAt.IsZero() {
		sm.AddedAt = time.Now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO samples (sha256, name, size, path, lora_sha256, origin, added_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (sha256) DO UPDATE SET name = excluded.name, size = excluded.size, path = excluded.path,
			lora_sha256 = CASE WHEN excluded.lora_sha256 = '' THEN samples.lora_sha256 ELSE excluded.lora_sha256 END,
			origin = excluded.origin, added_at = excluded.added_at`,
		strings.ToLower(sm.SHA256), sm.Name, sm.Size, sm.Path, strings.ToLower(sm.LoRA), sm.Origin, fmtTime(sm.AddedAt))
	return err
}

// ListSamples implements Store.
func (s *SQLite) ListSamples(ctx context.Context, loraSHA string) ([]Sample, error) {
	q := `SELECT sha256, name, size, path, lora_sha256, origin, added_at FROM samples`
	var args []any
	if loraSHA != "" {
		q += ` WHERE lora_sha256 = ?`
		args = append(args, strings.ToLower(loraSHA))
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY name, sha256`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Sample{}
	for rows.Next() {
		var sm Sample
		var at string
		if err := rows.Scan(&sm.SHA256, &sm.Name, &sm.Size, &sm.Path, &sm.LoRA, &sm.Origin, &at); err != nil {
			return nil, err
		}
		if sm.AddedAt, err = parseTime(at); err != nil {
			return nil, err
		}
		out = append(out, sm)
	}
	return out, rows.Err()
}
