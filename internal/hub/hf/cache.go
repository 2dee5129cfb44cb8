package hf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
)

// cacheDirTag is huggingface_hub's CACHEDIR.TAG, byte for byte.
const cacheDirTag = "Signature: 8a477f597d28d172789f06886806bc55\n" +
	"# This file is a cache directory tag created by huggingface_hub.\n" +
	"# For information about cache directory tags, see:\n" +
	"#\thttps://bford.info/cachedir/\n"

// fp turns a slash path relative to the cache root into an OS path for os.Root.
func fp(rel string) string { return filepath.FromSlash(rel) }

func (p *pull) writeCacheDirTag() {
	if _, err := p.root.Lstat("CACHEDIR.TAG"); errors.Is(err, fs.ErrNotExist) {
		_ = p.writeAtomic("CACHEDIR.TAG", []byte(cacheDirTag), 0o644)
	}
}

// ensureRef creates snapshots/<commit>/, writes the tree cache and points
// refs/<revision> at the commit (unless the revision is the commit itself). It runs once
// per pull, before the first file appears in the snapshot, so that refs never name a
// commit without a snapshot folder (huggingface_hub's scan_cache_dir checks that).
func (p *pull) ensureRef() error {
	p.refOnce.Do(func() {
		if err := p.root.MkdirAll(fp(path.Join(p.folder, "snapshots", p.commit)), 0o755); err != nil {
			p.refErr = fmt.Errorf("hf: cache: %w", err)
			return
		}
		p.writeTreeCache()
		if p.ref.Revision == p.commit {
			return
		}
		rel := path.Join(p.folder, "refs", p.ref.Revision)
		if b, err := p.root.ReadFile(fp(rel)); err == nil && string(b) == p.commit {
			return
		}
		if err := p.writeAtomic(rel, []byte(p.commit), 0o644); err != nil {
			p.refErr = fmt.Errorf("hf: cache: writing refs/%s: %w", clip(p.ref.Revision), err)
		}
	})
	return p.refErr
}

// writeTreeCache stores the listing as trees/<commit>.json (huggingface_hub's format 1);
// best effort, like huggingface_hub.
func (p *pull) writeTreeCache() {
	if p.listing == nil {
		return
	}
	rel := path.Join(p.folder, "trees", p.commit+".json")
	if _, err := p.root.Lstat(fp(rel)); err == nil {
		return
	}
	data, err := encodeTreeCache(p.listing)
	if err != nil {
		return
	}
	_ = p.writeAtomic(rel, data, 0o644)
}

// writeNoExist records that file does not exist at the commit.
func (p *pull) writeNoExist(file string) error {
	if err := p.ensureRef(); err != nil {
		return err
	}
	rel := path.Join(p.folder, ".no_exist", p.commit, file)
	if err := p.root.MkdirAll(fp(path.Dir(rel)), 0o755); err != nil {
		return fmt.Errorf("hf: cache: %w", err)
	}
	f, err := p.root.OpenFile(fp(rel), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("hf: cache: %w", err)
	}
	return f.Close()
}

// writeAtomic writes rel through a temporary file in the same folder and a rename.
func (p *pull) writeAtomic(rel string, data []byte, perm os.FileMode) error {
	dir, base := path.Split(rel)
	if dir != "" {
		if err := p.root.MkdirAll(fp(dir), 0o755); err != nil {
			return err
		}
	}
	tmp, f, err := p.createTemp(dir, base, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.root.Rename(fp(tmp), fp(rel))
	}
	if err != nil {
		_ = p.root.Remove(fp(tmp))
		return err
	}
	p.syncDir(dir)
	return nil
}

// tempName is a dot-named sibling of base, as atomicfile names its temporary files.
func tempName(dir, base string) string {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	return path.Join(dir, "."+base+atomicfile.TempMarker+hex.EncodeToString(rnd[:]))
}

func (p *pull) createTemp(dir, base string, perm os.FileMode) (string, *os.File, error) {
	for range 10 {
		tmp := tempName(dir, base)
		f, err := p.root.OpenFile(fp(tmp), os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return tmp, f, err
	}
	return "", nil, errors.New("could not create a temporary file")
}

func (p *pull) syncDir(dir string) {
	if dir == "" {
		dir = "."
	}
	if d, err := p.root.Open(fp(dir)); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// linkTarget is the relative symlink from snapshots/<commit>/<file> to blobs/<etag>.
func linkTarget(file, etag string) string {
	return strings.Repeat("../", 2+strings.Count(file, "/")) + "blobs/" + etag
}

// hasBlob reports whether blobs/<etag> is a regular file of the expected size.
func (p *pull) hasBlob(etag string, size int64) bool {
	fi, err := p.root.Lstat(fp(p.blobRel(etag)))
	return err == nil && fi.Mode().IsRegular() && fi.Size() == size
}

// hasPointer reports whether the snapshot already holds the file: our symlink to a good
// blob, or (where symlinks are not available) a regular file of the right size.
func (p *pull) hasPointer(file, etag string, size int64) bool {
	rel := fp(p.pointerRel(file))
	fi, err := p.root.Lstat(rel)
	if err != nil {
		return false
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		t, err := p.root.Readlink(rel)
		return err == nil && filepath.ToSlash(t) == linkTarget(file, etag) && p.hasBlob(etag, size)
	}
	return fi.Mode().IsRegular() && fi.Size() == size
}

// link points snapshots/<commit>/<file> at the blob, replacing whatever was there
// atomically (symlink at a temporary name, then rename). Where symlinks cannot be made,
// the blob is copied, as huggingface_hub does.
func (p *pull) link(file, etag string) error {
	rel := p.pointerRel(file)
	target := linkTarget(file, etag)
	dir, base := path.Split(rel)
	if err := p.root.MkdirAll(fp(dir), 0o755); err != nil {
		return fmt.Errorf("hf: cache: %w", err)
	}
	if t, err := p.root.Readlink(fp(rel)); err == nil && filepath.ToSlash(t) == target {
		return nil
	}
	tmp := tempName(dir, base)
	err := p.root.Symlink(fp(target), fp(tmp))
	if err != nil {
		var f *os.File
		tmp, f, err = p.createTemp(dir, base, 0o644)
		if err == nil {
			err = p.copyBlob(f, etag)
		}
		if err != nil {
			if tmp != "" {
				_ = p.root.Remove(fp(tmp))
			}
			return fmt.Errorf("hf: cache: linking %s: %w", clip(file), err)
		}
	}
	if err := p.root.Rename(fp(tmp), fp(rel)); err != nil {
		_ = p.root.Remove(fp(tmp))
		return fmt.Errorf("hf: cache: linking %s: %w", clip(file), err)
	}
	p.syncDir(dir)
	return nil
}

func (p *pull) copyBlob(dst *os.File, etag string) error {
	src, err := p.root.Open(fp(p.blobRel(etag)))
	if err != nil {
		dst.Close()
		return err
	}
	defer src.Close()
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// lock takes .locks/<folder>/<etag>.lock, the lock huggingface_hub takes for the same
// blob, waiting as long as ctx allows.
func (p *pull) lock(ctx context.Context, etag string) (func(), error) {
	dir := path.Join(".locks", p.folder)
	if err := p.root.MkdirAll(fp(dir), 0o755); err != nil {
		return nil, fmt.Errorf("hf: cache: %w", err)
	}
	f, err := p.root.OpenFile(fp(path.Join(dir, etag+".lock")), os.O_RDWR|os.O_CREATE, 0o664)
	if err != nil {
		return nil, fmt.Errorf("hf: cache: lock: %w", err)
	}
	for {
		ok, err := tryLock(f)
		if err != nil { // no flock on this file system: proceed unlocked, as huggingface_hub's WeakFileLock would (SoftFileLock aside)
			return func() { f.Close() }, nil
		}
		if ok {
			return func() { unlockFile(f); f.Close() }, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
