// Package library is scopectl's content-addressed LoRA library: files stored once by
// sha256 under the data dir (or indexed where they lie), each with its inspection report
// and origins, on top of the store index.
package library

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/safetensors"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Library ties the index to the blob directory.
type Library struct {
	Store    store.Store
	BlobDir  string // <data dir>/blobs
	Progress progress.Reporter
}

// Open opens (creating) the embedded library under dataDir.
func Open(dataDir string) (*Library, error) {
	st, err := store.OpenSQLite(filepath.Join(dataDir, "scopectl.db"))
	if err != nil {
		return nil, err
	}
	return &Library{Store: st, BlobDir: filepath.Join(dataDir, "blobs")}, nil
}

// Close closes the index.
func (l *Library) Close() error { return l.Store.Close() }

// BlobPath is where content with this sha256 is kept.
func (l *Library) BlobPath(sha string) string {
	return filepath.Join(l.BlobDir, "sha256", sha[:2], sha+".safetensors")
}

// AddOptions controls Add.
type AddOptions struct {
	Name    string       // entry name; default: file name without .safetensors
	Origin  store.Origin // default: {kind: local, path: abs path}
	InPlace bool         // index the file where it is (lora scan) instead of storing a copy
}

// AddResult says what Add did. Field names are part of --json.
type AddResult struct {
	Status string     `json:"status"` // added | exists
	Method string     `json:"method"` // reflink | hardlink | copy | indexed | none
	LoRA   store.LoRA `json:"lora"`
}

// ErrNotLoRA marks files that are valid safetensors but not Wan LoRAs.
var ErrNotLoRA = errors.New("not a Wan LoRA")

// Add imports one file. The same content twice is one entry (its origin is added).
func (l *Library) Add(ctx context.Context, path string, opt AddOptions) (*AddResult, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if opt.Name != "" {
		if err := ValidName(opt.Name); err != nil {
			return nil, err
		}
	}
	f, err := safetensors.Open(abs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := lora.Analyze(f)
	if err != nil {
		return nil, err
	}
	rep := lora.Describe(p, abs)
	if rep.Kind != "wan-lora" {
		return nil, fmt.Errorf("%s: %w: %s", path, ErrNotLoRA, rep.BaseReason)
	}
	if len(rep.Problems) > 0 {
		return nil, fmt.Errorf("%s: damaged LoRA: %s", path, rep.Problems[0])
	}
	sha, err := l.hash(abs, filepath.Base(abs), rep.Bytes)
	if err != nil {
		return nil, err
	}
	rep.SHA256 = sha
	origin := opt.Origin
	if origin.Kind == "" {
		origin = store.Origin{Kind: "local", Path: abs}
	}
	if existing, err := l.Store.GetBySHA(ctx, sha); err == nil {
		if err := l.Store.AddOrigin(ctx, sha, origin); err != nil {
			return nil, err
		}
		method := "none"
		if !existing.Managed && !opt.InPlace {
			// Indexed in place before; now the user wants the library to keep a copy.
			if method, err = l.ingest(abs, sha); err != nil {
				return nil, err
			}
			existing.Path, existing.Managed = l.BlobPath(sha), true
			if err := l.Store.UpdateLoRA(ctx, existing); err != nil {
				return nil, err
			}
		}
		existing, err = l.Store.GetBySHA(ctx, sha)
		return &AddResult{Status: "exists", Method: method, LoRA: existing}, err
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	name := opt.Name
	if name == "" {
		name = lora.DisplayName(abs)
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if other, err := l.Store.GetLoRA(ctx, name); err == nil && other.Name == name {
		return nil, fmt.Errorf("name %q is already used by %s (sha256 %s); choose another with --name", name, other.Path, other.SHA256[:12])
	}
	info, _ := json.Marshal(rep)
	entry := store.LoRA{
		SHA256: sha, Name: name, Size: rep.Bytes, Path: abs, Family: string(rep.Family),
		Base: rep.Base, Rank: rep.Rank, Info: info, Origins: []store.Origin{origin},
	}
	method := "indexed"
	if !opt.InPlace {
		if method, err = l.ingest(abs, sha); err != nil {
			return nil, err
		}
		entry.Path, entry.Managed = l.BlobPath(sha), true
	}
	if err := l.Store.AddLoRA(ctx, entry); err != nil {
		return nil, err
	}
	got, err := l.Store.GetBySHA(ctx, sha)
	return &AddResult{Status: "added", Method: method, LoRA: got}, err
}

// ValidName checks an entry name: it becomes a file name in Scope's LoRA dir.
func ValidName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("name %q: must not be empty, . or ..", name)
	case len(name) > 200:
		return fmt.Errorf("name %q: longer than 200 bytes", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("name %q: must not start with a dot (Scope would not list it)", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' || r == ':' {
			return fmt.Errorf("name %q: must not contain '/', '\\', ':' or control characters", name)
		}
	}
	return nil
}

func (l *Library) hash(path, label string, size int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	t := l.Progress.Start("hash", label, size)
	defer t.Finish()
	if _, err := io.Copy(io.MultiWriter(h, t), f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ingest stores src as the blob for sha: reflink, else hardlink, else a verified copy.
func (l *Library) ingest(src, sha string) (string, error) {
	return l.ingestTo(src, sha, l.BlobPath(sha))
}

// ingestTo stores src (whose sha256 is sha) at dst, as ingest does.
func (l *Library) ingestTo(src, sha, dst string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		// A blob left by an interrupted add: keep it only if it is intact.
		if got, err := lora.HashFile(dst); err == nil && got == sha {
			return "existing", nil
		}
	}
	af, err := atomicfile.Create(filepath.Dir(dst), filepath.Base(dst), 0o444)
	if err != nil {
		return "", err
	}
	defer af.Abort()
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	if reflink(af.File, in) == nil {
		if err := af.Commit(); err != nil {
			return "", err
		}
		return "reflink", nil
	}
	// Hardlink: the blob shares the user's inode. Link next to the final name, then
	// rename, so the blob path never names anything but complete content.
	tmp := dst + ".link-tmp"
	_ = os.Remove(tmp)
	if err := os.Link(src, tmp); err == nil {
		if err := os.Rename(tmp, dst); err == nil {
			_ = atomicfile.SyncDir(filepath.Dir(dst))
			return "hardlink", nil
		}
		_ = os.Remove(tmp)
	}
	h := sha256.New()
	fi, _ := in.Stat()
	t := l.Progress.Start("copy", filepath.Base(src), fi.Size())
	_, err = io.Copy(io.MultiWriter(af, h, t), in)
	t.Finish()
	if err != nil {
		return "", fmt.Errorf("copying %s into the library: %w", src, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return "", fmt.Errorf("%s changed while it was being added (sha256 %s, then %s)", src, sha[:12], got[:12])
	}
	if err := af.Commit(); err != nil {
		return "", err
	}
	return "copy", nil
}

// Remove deletes an entry, and its blob when the library owns it.
func (l *Library) Remove(ctx context.Context, ref string) (store.LoRA, error) {
	e, err := l.Store.GetLoRA(ctx, ref)
	if err != nil {
		return e, fmt.Errorf("%s: %w", ref, err)
	}
	if err := l.Store.DeleteLoRA(ctx, e.SHA256); err != nil {
		return e, err
	}
	if e.Managed && e.Path == l.BlobPath(e.SHA256) {
		if err := os.Remove(e.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return e, err
		}
	}
	return e, nil
}

// VerifyResult is one entry's check. Field names are part of --json.
type VerifyResult struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Path   string `json:"path"`
	Status string `json:"status"` // ok | missing | corrupt
	Detail string `json:"detail,omitempty"`
}

// Verify re-hashes every entry (or those named) and records when each was last good.
func (l *Library) Verify(ctx context.Context, refs []string) ([]VerifyResult, error) {
	var entries []store.LoRA
	if len(refs) == 0 {
		all, err := l.Store.ListLoRAs(ctx, store.Filter{})
		if err != nil {
			return nil, err
		}
		entries = all
	}
	for _, r := range refs {
		e, err := l.Store.GetLoRA(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		entries = append(entries, e)
	}
	out := make([]VerifyResult, 0, len(entries))
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		v := VerifyResult{Name: e.Name, SHA256: e.SHA256, Path: e.Path, Status: "ok"}
		fi, err := os.Stat(e.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			v.Status, v.Detail = "missing", "file does not exist"
		case err != nil:
			v.Status, v.Detail = "missing", err.Error()
		case fi.Size() != e.Size:
			v.Status, v.Detail = "corrupt", fmt.Sprintf("size %d, expected %d", fi.Size(), e.Size)
		default:
			got, err := l.hash(e.Path, e.Name, fi.Size())
			if err != nil {
				v.Status, v.Detail = "missing", err.Error()
			} else if got != e.SHA256 {
				v.Status, v.Detail = "corrupt", "sha256 "+got
			}
		}
		if v.Status == "ok" {
			now := time.Now().UTC()
			e.VerifiedAt = &now
			if err := l.Store.UpdateLoRA(ctx, e); err != nil {
				return out, err
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// Scan indexes every .safetensors file under dir in place. Files that are not Wan LoRAs
// are reported, not indexed.
func (l *Library) Scan(ctx context.Context, dir string) ([]*AddResult, []error, error) {
	var res []*AddResult
	var skipped []error
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".safetensors") || atomicfile.IsTemp(d.Name()) || !d.Type().IsRegular() {
			return nil
		}
		r, err := l.Add(ctx, p, AddOptions{InPlace: true})
		if err != nil {
			skipped = append(skipped, err)
			return nil
		}
		res = append(res, r)
		return nil
	})
	return res, skipped, err
}
