package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

// SQLite is the embedded Store. It is safe for concurrent use, and several
// processes may use the same database file (WAL, busy timeout, immediate
// write transactions).
type SQLite struct {
	db   *sql.DB
	path string
}

var _ Store = (*SQLite)(nil)

// timeFormat is RFC 3339 in UTC with a fixed nine-digit fraction, so that
// stored timestamps sort as text.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

func fmtTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad timestamp in database: %q", s)
	}
	return t.UTC(), nil
}

// dsn builds a SQLite URI for path with the connection settings applied to
// every pooled connection.
func dsn(abs string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows drive paths: file:///C:/...
	}
	u := url.URL{Path: p}
	q := "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	return "file://" + u.EscapedPath() + "?" + q
}

// OpenSQLite opens (creating if needed) the index at path and brings its
// schema up to date. The parent directory is created with mode 0700.
func OpenSQLite(p string) (*SQLite, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", abs, err)
	}
	s := &SQLite{db: db, path: abs}
	ctx := context.Background()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open index %s: %w", abs, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open index %s: %w", abs, err)
	}
	return s, nil
}

// Path returns the absolute path of the database file.
func (s *SQLite) Path() string { return s.path }

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

// SchemaVersion is the schema version this build writes.
func SchemaVersion() int { return len(migrations) }

func (s *SQLite) userVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, error) {
	var v int
	err := q.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

func newerErr(path string, v int) error {
	return fmt.Errorf("%s was written by a newer scopectl (schema %d, this build knows %d); upgrade scopectl", path, v, len(migrations))
}

func (s *SQLite) migrate(ctx context.Context) error {
	for {
		v, err := s.userVersion(ctx, s.db)
		if err != nil {
			return err
		}
		if v > len(migrations) {
			return newerErr(s.path, v)
		}
		if v == len(migrations) {
			return nil
		}
		if err := s.migrateStep(ctx); err != nil {
			return err
		}
	}
}

// migrateStep applies the next migration in its own (immediate) transaction,
// re-reading user_version inside it in case another process migrated first.
func (s *SQLite) migrateStep(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	v, err := s.userVersion(ctx, tx)
	if err != nil {
		return err
	}
	if v >= len(migrations) {
		return tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
		return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
	}
	return tx.Commit()
}

// --- helpers ---

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func normSHA(sha string) (string, error) {
	sha = strings.ToLower(sha)
	if len(sha) != 64 || !isHex(sha) {
		return "", fmt.Errorf("invalid sha256 %q", sha)
	}
	return sha, nil
}

type querier interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}

const loraCols = `l.sha256, l.name, l.size, l.path, l.managed, l.family, l.base, l.rank, l.info, l.added_at, l.verified_at`

type scanner interface{ Scan(...any) error }

func scanLoRA(r scanner) (LoRA, error) {
	var (
		l        LoRA
		info     sql.NullString
		added    string
		verified sql.NullString
	)
	if err := r.Scan(&l.SHA256, &l.Name, &l.Size, &l.Path, &l.Managed, &l.Family, &l.Base, &l.Rank, &info, &added, &verified); err != nil {
		return LoRA{}, err
	}
	if info.Valid && info.String != "" {
		l.Info = json.RawMessage(info.String)
	}
	t, err := parseTime(added)
	if err != nil {
		return LoRA{}, err
	}
	l.AddedAt = t
	if verified.Valid {
		t, err := parseTime(verified.String)
		if err != nil {
			return LoRA{}, err
		}
		l.VerifiedAt = &t
	}
	l.Origins = []Origin{}
	return l, nil
}

const originCols = `o.kind, o.path, o.url, o.repo, o.revision, o.commit_id, o.file, o.model_id, o.version_id, o.job, o.step, o.base_model, o.trigger_words`

func scanOrigin(r scanner, o *Origin) error {
	return r.Scan(&o.Kind, &o.Path, &o.URL, &o.Repo, &o.Revision, &o.Commit, &o.File, &o.ModelID, &o.VersionID, &o.Job, &o.Step, &o.BaseModel, &o.TriggerWords)
}

func loadOrigins(ctx context.Context, q querier, sha string) ([]Origin, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+originCols+` FROM origins o WHERE o.lora_sha = ? ORDER BY o.ordinal`, sha)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Origin{}
	for rows.Next() {
		var o Origin
		if err := scanOrigin(rows, &o); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// getOne returns the LoRA matching where (with origins) in a read transaction.
func (s *SQLite) getOne(ctx context.Context, what, where string, args ...any) (LoRA, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return LoRA{}, err
	}
	defer tx.Rollback()
	l, err := scanLoRA(tx.QueryRowContext(ctx, `SELECT `+loraCols+` FROM loras l WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return LoRA{}, fmt.Errorf("lora %s: %w", what, ErrNotFound)
	}
	if err != nil {
		return LoRA{}, err
	}
	if l.Origins, err = loadOrigins(ctx, tx, l.SHA256); err != nil {
		return LoRA{}, err
	}
	return l, nil
}

func addOrigins(ctx context.Context, tx *sql.Tx, sha string, have []Origin, add []Origin) error {
	var next int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(ordinal), -1) + 1 FROM origins WHERE lora_sha = ?`, sha).Scan(&next); err != nil {
		return err
	}
outer:
	for _, o := range add {
		for _, h := range have {
			if h == o {
				continue outer
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO origins (lora_sha, ordinal, kind, path, url, repo, revision, commit_id, file, model_id, version_id, job, step, base_model, trigger_words)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sha, next, o.Kind, o.Path, o.URL, o.Repo, o.Revision, o.Commit, o.File, o.ModelID, o.VersionID, o.Job, o.Step, o.BaseModel, o.TriggerWords); err != nil {
			return err
		}
		next++
		have = append(have, o)
	}
	return nil
}

func infoArg(info json.RawMessage) (any, error) {
	if len(info) == 0 {
		return nil, nil
	}
	if !json.Valid(info) {
		return nil, errors.New("lora info is not valid JSON")
	}
	return string(info), nil
}

func verifiedArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return fmtTime(*t)
}

// nameOwner returns the sha256 of the LoRA named name, or "".
func nameOwner(ctx context.Context, q querier, name string) (string, error) {
	var sha string
	err := q.QueryRowContext(ctx, `SELECT sha256 FROM loras WHERE name = ?`, name).Scan(&sha)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return sha, err
}

// --- Store ---

// AddLoRA implements Store.
func (s *SQLite) AddLoRA(ctx context.Context, l LoRA) error {
	sha, err := normSHA(l.SHA256)
	if err != nil {
		return err
	}
	if l.Name == "" {
		return errors.New("lora name is empty")
	}
	info, err := infoArg(l.Info)
	if err != nil {
		return err
	}
	if l.AddedAt.IsZero() {
		l.AddedAt = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var existing string
	err = tx.QueryRowContext(ctx, `SELECT name FROM loras WHERE sha256 = ?`, sha).Scan(&existing)
	if err == nil {
		return fmt.Errorf("lora %s %w (as %q)", sha, ErrExists, existing)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if owner, err := nameOwner(ctx, tx, l.Name); err != nil {
		return err
	} else if owner != "" {
		return fmt.Errorf("lora name %q %w (sha256 %s)", l.Name, ErrExists, owner)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO loras (sha256, name, size, path, managed, family, base, rank, info, added_at, verified_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		sha, l.Name, l.Size, l.Path, l.Managed, l.Family, l.Base, l.Rank, info, fmtTime(l.AddedAt), verifiedArg(l.VerifiedAt)); err != nil {
		return err
	}
	if err := addOrigins(ctx, tx, sha, nil, l.Origins); err != nil {
		return err
	}
	return tx.Commit()
}

// GetLoRA implements Store.
func (s *SQLite) GetLoRA(ctx context.Context, ref string) (LoRA, error) {
	l, err := s.getOne(ctx, fmt.Sprintf("%q", ref), `l.name = ?`, ref)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return l, err
	}
	p := strings.ToLower(ref)
	if p == "" || !isHex(p) || len(p) > 64 {
		return LoRA{}, fmt.Errorf("lora %q: %w", ref, ErrNotFound)
	}
	if len(p) < MinPrefix {
		return LoRA{}, fmt.Errorf("lora %q: %w (a sha256 prefix needs at least %d hex digits)", ref, ErrNotFound, MinPrefix)
	}
	if len(p) == 64 {
		return s.GetBySHA(ctx, p)
	}
	// Hex digits sort below "g", so [p, p+"g") is exactly the prefix range.
	rows, err := s.db.QueryContext(ctx, `SELECT sha256, name FROM loras WHERE sha256 >= ? AND sha256 < ? ORDER BY sha256 LIMIT 6`, p, p+"g")
	if err != nil {
		return LoRA{}, err
	}
	var matches []string
	for rows.Next() {
		var sha, name string
		if err := rows.Scan(&sha, &name); err != nil {
			rows.Close()
			return LoRA{}, err
		}
		matches = append(matches, fmt.Sprintf("%s (%s)", name, sha[:12]))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return LoRA{}, err
	}
	switch {
	case len(matches) == 0:
		return LoRA{}, fmt.Errorf("lora %q: %w", ref, ErrNotFound)
	case len(matches) > 1:
		more := ""
		if len(matches) > 5 {
			matches, more = matches[:5], ", ..."
		}
		return LoRA{}, fmt.Errorf("sha256 prefix %q is %w: matches %s%s", ref, ErrAmbiguous, strings.Join(matches, ", "), more)
	}
	l, err = s.getOne(ctx, fmt.Sprintf("%q", ref), `l.sha256 >= ? AND l.sha256 < ?`, p, p+"g")
	return l, err
}

// GetBySHA implements Store.
func (s *SQLite) GetBySHA(ctx context.Context, sha string) (LoRA, error) {
	n, err := normSHA(sha)
	if err != nil {
		return LoRA{}, fmt.Errorf("lora %q: %w", sha, ErrNotFound)
	}
	return s.getOne(ctx, n, `l.sha256 = ?`, n)
}

func hasGlob(s string) bool { return strings.ContainsAny(s, "*?[") }

// ListLoRAs implements Store.
func (s *SQLite) ListLoRAs(ctx context.Context, f Filter) ([]LoRA, error) {
	if hasGlob(f.Name) {
		if _, err := path.Match(f.Name, ""); err != nil {
			return nil, fmt.Errorf("bad name pattern %q: %w", f.Name, err)
		}
	}
	where, args := []string{"1"}, []any{}
	if f.Base != "" {
		where, args = append(where, "l.base = ?"), append(args, f.Base)
	}
	if f.Family != "" {
		where, args = append(where, "l.family = ?"), append(args, f.Family)
	}
	w := strings.Join(where, " AND ")

	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+loraCols+` FROM loras l WHERE `+w+` ORDER BY l.name`, args...)
	if err != nil {
		return nil, err
	}
	out := []LoRA{}
	idx := map[string]int{}
	lname := strings.ToLower(f.Name)
	for rows.Next() {
		l, err := scanLoRA(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		if f.Name != "" {
			if hasGlob(f.Name) {
				if ok, _ := path.Match(f.Name, l.Name); !ok {
					continue
				}
			} else if !strings.Contains(strings.ToLower(l.Name), lname) {
				continue
			}
		}
		idx[l.SHA256] = len(out)
		out = append(out, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	orows, err := tx.QueryContext(ctx, `SELECT o.lora_sha, `+originCols+` FROM origins o JOIN loras l ON l.sha256 = o.lora_sha
		WHERE `+w+` ORDER BY o.lora_sha, o.ordinal`, args...)
	if err != nil {
		return nil, err
	}
	defer orows.Close()
	for orows.Next() {
		var sha string
		var o Origin
		if err := orows.Scan(&sha, &o.Kind, &o.Path, &o.URL, &o.Repo, &o.Revision, &o.Commit, &o.File, &o.ModelID, &o.VersionID, &o.Job, &o.Step, &o.BaseModel, &o.TriggerWords); err != nil {
			return nil, err
		}
		if i, ok := idx[sha]; ok {
			out[i].Origins = append(out[i].Origins, o)
		}
	}
	return out, orows.Err()
}

// UpdateLoRA implements Store.
func (s *SQLite) UpdateLoRA(ctx context.Context, l LoRA) error {
	sha, err := normSHA(l.SHA256)
	if err != nil {
		return err
	}
	if l.Name == "" {
		return errors.New("lora name is empty")
	}
	info, err := infoArg(l.Info)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if owner, err := nameOwner(ctx, tx, l.Name); err != nil {
		return err
	} else if owner != "" && owner != sha {
		return fmt.Errorf("lora name %q %w (sha256 %s)", l.Name, ErrExists, owner)
	}
	res, err := tx.ExecContext(ctx, `UPDATE loras SET name = ?, path = ?, managed = ?, info = ?, family = ?, base = ?, rank = ?, verified_at = ?
		WHERE sha256 = ?`, l.Name, l.Path, l.Managed, info, l.Family, l.Base, l.Rank, verifiedArg(l.VerifiedAt), sha)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("lora %s: %w", sha, ErrNotFound)
	}
	return tx.Commit()
}

// AddOrigin implements Store.
func (s *SQLite) AddOrigin(ctx context.Context, sha string, o Origin) error {
	n, err := normSHA(sha)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var one int
	if err := tx.QueryRowContext(ctx, `SELECT 1 FROM loras WHERE sha256 = ?`, n).Scan(&one); errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("lora %s: %w", n, ErrNotFound)
	} else if err != nil {
		return err
	}
	have, err := loadOrigins(ctx, tx, n)
	if err != nil {
		return err
	}
	if err := addOrigins(ctx, tx, n, have, []Origin{o}); err != nil {
		return err
	}
	return tx.Commit()
}

func deleted(res sql.Result, err error, what string) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}

// DeleteLoRA implements Store. Origins go with it (ON DELETE CASCADE).
func (s *SQLite) DeleteLoRA(ctx context.Context, sha string) error {
	n, err := normSHA(sha)
	if err != nil {
		return fmt.Errorf("lora %q: %w", sha, ErrNotFound)
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM loras WHERE sha256 = ?`, n)
	return deleted(res, err, "lora "+n)
}

// PutInstall implements Store.
func (s *SQLite) PutInstall(ctx context.Context, in Install) error {
	if in.Dir == "" || in.File == "" {
		return errors.New("install needs a dir and a file")
	}
	in.Dir = filepath.Clean(in.Dir)
	if in.InstalledAt.IsZero() {
		in.InstalledAt = time.Now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO installs (dir, file, name, source_sha256, sha256, size, form, pipeline, installed_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (dir, file) DO UPDATE SET name = excluded.name, source_sha256 = excluded.source_sha256,
			sha256 = excluded.sha256, size = excluded.size, form = excluded.form, pipeline = excluded.pipeline,
			installed_at = excluded.installed_at`,
		in.Dir, in.File, in.Name, strings.ToLower(in.SourceSHA256), strings.ToLower(in.SHA256), in.Size, in.Form, in.Pipeline, fmtTime(in.InstalledAt))
	return err
}

// ListInstalls implements Store.
func (s *SQLite) ListInstalls(ctx context.Context, dir string) ([]Install, error) {
	q := `SELECT dir, file, name, source_sha256, sha256, size, form, pipeline, installed_at FROM installs`
	var args []any
	if dir != "" {
		q += ` WHERE dir = ?`
		args = append(args, filepath.Clean(dir))
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY dir, file`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Install{}
	for rows.Next() {
		var in Install
		var at string
		if err := rows.Scan(&in.Dir, &in.File, &in.Name, &in.SourceSHA256, &in.SHA256, &in.Size, &in.Form, &in.Pipeline, &at); err != nil {
			return nil, err
		}
		if in.InstalledAt, err = parseTime(at); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// DeleteInstall implements Store.
func (s *SQLite) DeleteInstall(ctx context.Context, dir, file string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM installs WHERE dir = ? AND file = ?`, filepath.Clean(dir), file)
	return deleted(res, err, fmt.Sprintf("install %s", filepath.Join(dir, file)))
}
