package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Dataset is one version of a training dataset kept in the library: a manifest of
// files (each a library blob) whose sha256 is the dataset's id.
type Dataset struct {
	Name        string          `json:"name"`
	Version     int             `json:"version"` // 1, 2, … per name
	ManifestSHA string          `json:"manifest_sha256"`
	Files       int             `json:"files"` // media, captions and other sidecars
	Items       int             `json:"items"` // media files that train
	Bytes       int64           `json:"bytes"`
	CreatedAt   time.Time       `json:"created_at"`
	SourceDir   string          `json:"source_dir,omitempty"`
	Manifest    []byte          `json:"-"`               // canonical form (dataset.Manifest.Bytes)
	Check       json.RawMessage `json:"check,omitempty"` // the dataset check summary when it was added
}

// DatasetStore is implemented by stores that keep training datasets.
type DatasetStore interface {
	// AddDatasetVersion records d (Manifest set) as the next version of d.Name, with
	// blobs (the sha256s of its files), in one transaction: a dataset is visible whole or
	// not at all. When the newest version of d.Name already has d.ManifestSHA, nothing is
	// written and that version comes back with added false.
	AddDatasetVersion(ctx context.Context, d Dataset, blobs []string) (got Dataset, added bool, err error)
	// GetDataset returns a version of name (0: the newest), manifest included. ErrNotFound.
	GetDataset(ctx context.Context, name string, version int) (Dataset, error)
	// ListDatasets returns every version of every dataset (no manifests), by name and version.
	ListDatasets(ctx context.Context) ([]Dataset, error)
	// DatasetsByManifest returns the versions whose manifest has this sha256.
	DatasetsByManifest(ctx context.Context, manifestSHA string) ([]Dataset, error)
	// DeleteDataset removes every version of name and returns them, with the blobs they
	// listed that no other dataset version lists. ErrNotFound.
	DeleteDataset(ctx context.Context, name string) (removed []Dataset, unlisted []string, err error)
	// DatasetBlobInUse reports whether a dataset version lists the blob sha.
	DatasetBlobInUse(ctx context.Context, sha string) (bool, error)
}

var _ DatasetStore = (*SQLite)(nil)

const datasetCols = `name, version, manifest_sha, files, items, bytes, created_at, source_dir, check_json`

func scanDataset(r scanner, withManifest bool) (Dataset, error) {
	var d Dataset
	var at, check string
	dst := []any{&d.Name, &d.Version, &d.ManifestSHA, &d.Files, &d.Items, &d.Bytes, &at, &d.SourceDir, &check}
	if withManifest {
		dst = append(dst, &d.Manifest)
	}
	if err := r.Scan(dst...); err != nil {
		return d, err
	}
	var err error
	if d.CreatedAt, err = parseTime(at); err != nil {
		return d, err
	}
	if check != "" {
		d.Check = json.RawMessage(check)
	}
	return d, nil
}

// AddDatasetVersion implements DatasetStore.
func (s *SQLite) AddDatasetVersion(ctx context.Context, d Dataset, blobs []string) (Dataset, bool, error) {
	if d.Name == "" || len(d.ManifestSHA) != 64 || !isHex(d.ManifestSHA) {
		return d, false, errors.New("a dataset needs a name and a manifest sha256")
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return d, false, err
	}
	defer tx.Rollback()
	last, err := scanDataset(tx.QueryRowContext(ctx, `SELECT `+datasetCols+`, manifest FROM datasets WHERE name = ? ORDER BY version DESC LIMIT 1`, d.Name), true)
	switch {
	case err == nil && last.ManifestSHA == d.ManifestSHA:
		return last, false, nil
	case err == nil:
		d.Version = last.Version + 1
	case errors.Is(err, sql.ErrNoRows):
		d.Version = 1
	default:
		return d, false, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO datasets (`+datasetCols+`, manifest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.Name, d.Version, d.ManifestSHA, d.Files, d.Items, d.Bytes, fmtTime(d.CreatedAt), d.SourceDir, string(d.Check), d.Manifest); err != nil {
		return d, false, err
	}
	for _, b := range blobs {
		sha, err := normSHA(b)
		if err != nil {
			return d, false, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO dataset_blobs (manifest_sha, sha256) VALUES (?, ?)`, d.ManifestSHA, sha); err != nil {
			return d, false, err
		}
	}
	if err := tx.Commit(); err != nil {
		return d, false, err
	}
	d.CreatedAt = d.CreatedAt.UTC()
	return d, true, nil
}

// GetDataset implements DatasetStore.
func (s *SQLite) GetDataset(ctx context.Context, name string, version int) (Dataset, error) {
	q := `SELECT ` + datasetCols + `, manifest FROM datasets WHERE name = ?`
	args := []any{name}
	if version > 0 {
		q += ` AND version = ?`
		args = append(args, version)
	}
	d, err := scanDataset(s.db.QueryRowContext(ctx, q+` ORDER BY version DESC LIMIT 1`, args...), true)
	if errors.Is(err, sql.ErrNoRows) {
		if version > 0 {
			return d, fmt.Errorf("dataset %s version %d: %w", name, version, ErrNotFound)
		}
		return d, fmt.Errorf("dataset %q: %w", name, ErrNotFound)
	}
	return d, err
}

func (s *SQLite) listDatasets(ctx context.Context, where string, args ...any) ([]Dataset, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+datasetCols+` FROM datasets `+where+` ORDER BY name, version`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Dataset{}
	for rows.Next() {
		d, err := scanDataset(rows, false)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ListDatasets implements DatasetStore.
func (s *SQLite) ListDatasets(ctx context.Context) ([]Dataset, error) { return s.listDatasets(ctx, "") }

// DatasetsByManifest implements DatasetStore.
func (s *SQLite) DatasetsByManifest(ctx context.Context, manifestSHA string) ([]Dataset, error) {
	return s.listDatasets(ctx, "WHERE manifest_sha = ?", strings.ToLower(manifestSHA))
}

// DeleteDataset implements DatasetStore.
func (s *SQLite) DeleteDataset(ctx context.Context, name string) ([]Dataset, []string, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+datasetCols+` FROM datasets WHERE name = ? ORDER BY version`, name)
	if err != nil {
		return nil, nil, err
	}
	var removed []Dataset
	for rows.Next() {
		d, err := scanDataset(rows, false)
		if err != nil {
			rows.Close()
			return nil, nil, err
		}
		removed = append(removed, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if len(removed) == 0 {
		return nil, nil, fmt.Errorf("dataset %q: %w", name, ErrNotFound)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM datasets WHERE name = ?`, name); err != nil {
		return nil, nil, err
	}
	// Blobs of manifests no dataset version has any more: forget the listing, and return
	// those no remaining manifest lists.
	gone, err := shas(ctx, tx, `SELECT DISTINCT sha256 FROM dataset_blobs WHERE manifest_sha NOT IN (SELECT manifest_sha FROM datasets) ORDER BY sha256`)
	if err != nil {
		return nil, nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM dataset_blobs WHERE manifest_sha NOT IN (SELECT manifest_sha FROM datasets)`); err != nil {
		return nil, nil, err
	}
	unlisted := []string{}
	for _, sha := range gone {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM dataset_blobs WHERE sha256 = ?`, sha).Scan(&n); err != nil {
			return nil, nil, err
		}
		if n == 0 {
			unlisted = append(unlisted, sha)
		}
	}
	return removed, unlisted, tx.Commit()
}

// DatasetBlobInUse implements DatasetStore.
func (s *SQLite) DatasetBlobInUse(ctx context.Context, sha string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM dataset_blobs WHERE sha256 = ?`, strings.ToLower(sha)).Scan(&n)
	return n > 0, err
}

func shas(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
