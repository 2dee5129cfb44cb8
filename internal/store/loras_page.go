package store

import (
	"context"
	"database/sql"
	"fmt"
	"path"
	"strings"
)

// Page selects one page of a listing ordered by name: at most Limit entries whose
// name sorts after After ("" : from the start).
type Page struct {
	After string
	Limit int
}

// MaxPage is the largest page ListLoRAsPage returns.
const MaxPage = 1000

// ListLoRAsPage returns one page of the LoRAs matching f, ordered by name, with their
// origins but without their inspection report (Info: GetLoRA has it), and whether
// more follow. Name filters match as in ListLoRAs (a case-insensitive substring, or a
// glob). It reads only the page, so a client walks a large library in constant time
// per page.
func (s *SQLite) ListLoRAsPage(ctx context.Context, f Filter, p Page) ([]LoRA, bool, error) {
	if p.Limit <= 0 || p.Limit > MaxPage {
		return nil, false, fmt.Errorf("page limit %d: want 1..%d", p.Limit, MaxPage)
	}
	where, args := []string{"l.name > ?"}, []any{p.After}
	if f.Base != "" {
		where, args = append(where, "l.base = ?"), append(args, f.Base)
	}
	if f.Family != "" {
		where, args = append(where, "l.family = ?"), append(args, f.Family)
	}
	if f.Name != "" {
		if hasGlob(f.Name) {
			if _, err := path.Match(f.Name, ""); err != nil {
				return nil, false, fmt.Errorf("bad name pattern %q: %w", f.Name, err)
			}
			where, args = append(where, "l.name GLOB ?"), append(args, f.Name)
		} else {
			where, args = append(where, "instr(lower(l.name), ?) > 0"), append(args, strings.ToLower(f.Name))
		}
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, false, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT l.sha256, l.name, l.size, l.path, l.managed, l.family, l.base, l.rank, NULL, l.added_at, l.verified_at
		FROM loras l WHERE `+strings.Join(where, " AND ")+` ORDER BY l.name LIMIT ?`, append(args, p.Limit+1)...)
	if err != nil {
		return nil, false, err
	}
	out := make([]LoRA, 0, p.Limit)
	idx := map[string]int{}
	more := false
	for rows.Next() {
		if len(out) == p.Limit {
			more = true
			break
		}
		l, err := scanLoRA(rows)
		if err != nil {
			rows.Close()
			return nil, false, err
		}
		idx[l.SHA256] = len(out)
		out = append(out, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if len(out) == 0 {
		return out, false, nil
	}
	shas := make([]any, len(out))
	for i, l := range out {
		shas[i] = l.SHA256
	}
	orows, err := tx.QueryContext(ctx, `SELECT o.lora_sha, `+originCols+` FROM origins o
		WHERE o.lora_sha IN (?`+strings.Repeat(",?", len(shas)-1)+`) ORDER BY o.lora_sha, o.ordinal`, shas...)
	if err != nil {
		return nil, false, err
	}
	defer orows.Close()
	for orows.Next() {
		var sha string
		var o Origin
		if err := orows.Scan(&sha, &o.Kind, &o.Path, &o.URL, &o.Repo, &o.Revision, &o.Commit, &o.File, &o.ModelID, &o.VersionID, &o.Job, &o.Step, &o.BaseModel, &o.TriggerWords); err != nil {
			return nil, false, err
		}
		if i, ok := idx[sha]; ok {
			out[i].Origins = append(out[i].Origins, o)
		}
	}
	return out, more, orows.Err()
}

// CountLoRAs is the number of library entries.
func (s *SQLite) CountLoRAs(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM loras`).Scan(&n)
	return n, err
}
