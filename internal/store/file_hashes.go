package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// GetFileHash implements Store.
func (s *SQLite) GetFileHash(ctx context.Context, path string) (FileHash, error) {
	fh := FileHash{Path: filepath.Clean(path)}
	var ino int64
	var at string
	err := s.db.QueryRowContext(ctx, `SELECT size, mtime_ns, inode, sha256, checked_at FROM file_hashes WHERE path = ?`, fh.Path).
		Scan(&fh.Size, &fh.MtimeNs, &ino, &fh.SHA256, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return FileHash{}, fmt.Errorf("file hash of %s: %w", fh.Path, ErrNotFound)
	}
	if err != nil {
		return FileHash{}, err
	}
	fh.Inode = uint64(ino)
	if fh.CheckedAt, err = parseTime(at); err != nil {
		return FileHash{}, err
	}
	return fh, nil
}

// PutFileHash implements Store.
func (s *SQLite) PutFileHash(ctx context.Context, fh FileHash) error {
	sha, err := normSHA(fh.SHA256)
	if err != nil {
		return err
	}
	if fh.Path == "" || !filepath.IsAbs(fh.Path) {
		return fmt.Errorf("file hash: path %q is not absolute", fh.Path)
	}
	if fh.CheckedAt.IsZero() {
		fh.CheckedAt = time.Now()
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO file_hashes (path, size, mtime_ns, inode, sha256, checked_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, inode = excluded.inode,
			sha256 = excluded.sha256, checked_at = excluded.checked_at`,
		filepath.Clean(fh.Path), fh.Size, fh.MtimeNs, int64(fh.Inode), strings.ToLower(sha), fmtTime(fh.CheckedAt))
	return err
}

// DeleteFileHash implements Store.
func (s *SQLite) DeleteFileHash(ctx context.Context, path string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM file_hashes WHERE path = ?`, filepath.Clean(path))
	return err
}
