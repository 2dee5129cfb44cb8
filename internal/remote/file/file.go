// Package file is the local-folder remote (file:///path): the default target, Scope's
// own LoRA dir on this machine, and the far side of the SSH exec and agent backends.
package file

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/remote"
)

func init() {
	remote.Register("file", func(_ context.Context, u *url.URL, _ remote.Env) (remote.Remote, error) {
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("file://%s%s: file URLs name a local path (file:///path)", u.Host, u.Path)
		}
		return New(u.Path)
	})
}

// Folder is a local directory.
type Folder struct{ dir string }

// New opens (creating) a local folder.
func New(dir string) (*Folder, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, err
	}
	return &Folder{dir: abs}, nil
}

func (f *Folder) String() string { return "file://" + f.dir }
func (f *Folder) Close() error   { return nil }

// Dir is the folder's absolute path.
func (f *Folder) Dir() string { return f.dir }

func (f *Folder) List(ctx context.Context) ([]remote.Entry, error) {
	des, err := os.ReadDir(f.dir)
	if err != nil {
		return nil, err
	}
	var out []remote.Entry
	for _, de := range des {
		if !de.Type().IsRegular() || remote.IsTemp(de.Name()) || atomicfile.IsTemp(de.Name()) || remote.CheckName(de.Name()) != nil {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, remote.Entry{Name: de.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *Folder) Put(ctx context.Context, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	return PutFile(ctx, f.dir, name, src, opt)
}

// PutFile publishes src as dir/name atomically, resuming a partial temporary file of the
// same content. Exported for the receiving side of other backends (the agent).
func PutFile(ctx context.Context, dir, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	res, err := putFile(ctx, dir, name, src, opt)
	if errors.Is(err, remote.ErrHashMismatch) && res.Resumed > 0 {
		// The partial file held other bytes than its name promised (another writer's
		// sparse file, a damaged disk): start over once, from zero.
		again, err := putFile(ctx, dir, name, src, opt)
		again.Sent += res.Sent
		return again, err
	}
	return res, err
}

func putFile(ctx context.Context, dir, name string, src remote.Source, opt remote.PutOptions) (remote.PutResult, error) {
	var res remote.PutResult
	if err := remote.CheckName(name); err != nil {
		return res, err
	}
	tmp := filepath.Join(dir, remote.TempName(name, src.SHA256))
	w, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return res, err
	}
	defer w.Close()
	h := sha256.New()
	have, err := w.Seek(0, io.SeekEnd)
	if err != nil {
		return res, err
	}
	if have > src.Size {
		have = 0
	}
	if have > 0 { // resume: the bytes already there count towards the hash
		if _, err := io.Copy(h, io.NewSectionReader(w, 0, have)); err != nil {
			return res, err
		}
	}
	if err := w.Truncate(have); err != nil {
		return res, err
	}
	if _, err := w.Seek(have, io.SeekStart); err != nil {
		return res, err
	}
	res.Resumed = have
	sinks := []io.Writer{w, h}
	if opt.Progress != nil {
		sinks = append(sinks, opt.Progress)
	}
	n, err := io.Copy(io.MultiWriter(sinks...), &ctxReader{ctx: ctx, r: io.NewSectionReader(src.R, have, src.Size-have)})
	res.Sent = n
	if err != nil {
		return res, err // the partial file stays for a resume
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != src.SHA256 {
		w.Close()
		os.Remove(tmp)
		return res, fmt.Errorf("%s: %w: got %s, expected %s", name, remote.ErrHashMismatch, got, src.SHA256)
	}
	if err := w.Sync(); err != nil {
		return res, err
	}
	if err := w.Close(); err != nil {
		return res, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return res, err
	}
	return res, atomicfile.SyncDir(dir)
}

// ctxReader stops a copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (f *Folder) Get(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	if err := remote.CheckName(name); err != nil {
		return nil, err
	}
	r, err := os.Open(filepath.Join(f.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", name, remote.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (f *Folder) Delete(ctx context.Context, name string) error {
	if err := remote.CheckName(name); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(f.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", name, remote.ErrNotFound)
	}
	if err != nil {
		return err
	}
	return atomicfile.SyncDir(f.dir)
}

// Hash computes a file's sha256 where it lies.
func (f *Folder) Hash(ctx context.Context, name string) (string, error) {
	r, err := f.Get(ctx, name, 0)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, &ctxReader{ctx: ctx, r: r}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
