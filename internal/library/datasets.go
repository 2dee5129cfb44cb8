package library

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/store"
)

// The blob store is shared: a training dataset's files (internal/dataset/datasetlib) are
// blobs by sha256 at BlobPath, as LoRAs are, so the same bytes are kept once whichever
// holds them, and a blob stays while a LoRA entry or a dataset version still uses it.

// CachedSHA returns the sha256 recorded for the file at path while it still has the
// size, mtime and inode fi gives (and was not modified around the time it was read); ""
// when it must be read again.
func (l *Library) CachedSHA(ctx context.Context, path string, fi os.FileInfo) string {
	return l.knownHash(ctx, path, fi)
}

// RememberSHA records sha as the content of path, read in full from start on, if the
// file still is as before described it (a cache for CachedSHA).
func (l *Library) RememberSHA(ctx context.Context, path string, before os.FileInfo, sha string, start time.Time) {
	l.remember(ctx, path, before, sha, start)
}

// StoreBlob makes the blob for sha from src (whose sha256 is sha, hashed while src was
// as fi describes it) as `lora add` does: a reflink where the filesystem can, else a copy
// verified against sha, written atomically. A blob already there and intact is kept
// ("existing"): an interrupted add resumes without copying again.
func (l *Library) StoreBlob(ctx context.Context, src, sha string, fi os.FileInfo) (string, error) {
	dst := l.BlobPath(sha)
	if bi, err := os.Stat(dst); err == nil && bi.Mode().IsRegular() && bi.Size() == fi.Size() && l.knownHash(ctx, dst, bi) == sha {
		return "existing", nil
	}
	quiet := *l // the caller reports progress for the whole dataset, not per file
	quiet.Progress = progress.Reporter{}
	method, err := quiet.ingestTo(src, sha, dst, ingestOpts{src: fi})
	if err != nil {
		return "", err
	}
	l.rememberBlob(ctx, dst, sha)
	return method, nil
}

// BlobInUse reports whether the blob for sha is used by a LoRA entry the library owns
// or by a dataset version.
func (l *Library) BlobInUse(ctx context.Context, sha string) (bool, error) {
	e, err := l.Store.GetBySHA(ctx, sha)
	switch {
	case err == nil && e.Managed && e.Path == l.BlobPath(sha):
		return true, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	return l.datasetUses(ctx, sha)
}

// datasetUses reports whether a dataset version lists the blob for sha.
func (l *Library) datasetUses(ctx context.Context, sha string) (bool, error) {
	ds, ok := l.Store.(store.DatasetStore)
	if !ok {
		return false, nil
	}
	return ds.DatasetBlobInUse(ctx, sha)
}

// RemoveBlob deletes the blob for sha unless a LoRA entry or a dataset version uses it;
// removed says whether it did.
func (l *Library) RemoveBlob(ctx context.Context, sha string) (removed bool, err error) {
	if used, err := l.BlobInUse(ctx, sha); err != nil || used {
		return false, err
	}
	p := l.BlobPath(sha)
	if err := os.Remove(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("removing blob %.12s: %w", sha, err)
	}
	_ = l.Store.DeleteFileHash(ctx, p)
	return true, nil
}
