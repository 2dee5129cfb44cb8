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
	// Link stores the file by a hardlink when it can (else a copy): no second copy on disk,
	// but the entry shares the file's bytes, so editing the file in place damages the
	// entry. For files scopectl itself downloaded and removes afterwards, and `lora add --link`.
	Link bool

	uniqueName bool // a name in use by other content gets "-" and 8 hex digits of the sha256 (scan)
}

// AddResult says what Add did. Field names are part of --json.
type AddResult struct {
	Status string     `json:"status"` // added | exists | restored
	Method string     `json:"method"` // reflink | hardlink | copy | indexed | existing | moved | none
	Note   string     `json:"note,omitempty"`
	LoRA   store.LoRA `json:"lora"`
}

// ErrNotLoRA marks files that are valid safetensors but not Wan LoRAs.
var ErrNotLoRA = errors.New("not a Wan LoRA")

// Add imports one file. The same content twice is one entry (its origin is added). Adding
// the content of an entry whose file was damaged restores it.
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
	rep, err := inspect(abs, path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sha, err := l.hash(abs, filepath.Base(abs), fi.Size())
	if err != nil {
		return nil, err
	}
	l.remember(ctx, abs, fi, sha, start)
	rep.SHA256 = sha
	if existing, err := l.Store.GetBySHA(ctx, sha); err == nil {
		return l.addExisting(ctx, abs, fi, existing, opt)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return l.addNew(ctx, abs, fi, rep, opt)
}

// inspect reads the header of the file at abs (named path to the user) and refuses what
// is not an intact Wan LoRA.
func inspect(abs, path string) (*lora.Report, error) {
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
	return rep, nil
}

func origin(opt AddOptions, abs string) store.Origin {
	if opt.Origin.Kind == "" {
		return store.Origin{Kind: "local", Path: abs}
	}
	return opt.Origin
}

// addExisting records another origin of an entry's content (the file at abs, described
// by fi), and repairs the entry with it: a damaged blob is restored, a blob that is a
// hardlink of abs becomes the library's own copy, an in-place entry whose file is gone or
// changed follows abs (scan).
func (l *Library) addExisting(ctx context.Context, abs string, fi os.FileInfo, existing store.LoRA, opt AddOptions) (*AddResult, error) {
	if err := l.Store.AddOrigin(ctx, existing.SHA256, origin(opt, abs)); err != nil {
		return nil, err
	}
	res := &AddResult{Status: "exists", Method: "none"}
	var dmg *DamagedError
	switch cerr := l.Check(ctx, existing); {
	case cerr != nil && !errors.As(cerr, &dmg):
		return nil, cerr
	case existing.Managed && dmg != nil:
		method, err := l.ingestTo(abs, existing.SHA256, l.BlobPath(existing.SHA256), ingestOpts{link: opt.Link, src: fi, replace: true})
		if err != nil {
			return nil, err
		}
		existing.Path = l.BlobPath(existing.SHA256)
		if err := l.Store.UpdateLoRA(ctx, existing); err != nil {
			return nil, err
		}
		l.rememberBlob(ctx, existing.Path, existing.SHA256)
		res.Status, res.Method, res.Note = "restored", method, "its library file "+dmg.Detail+"; restored from "+abs
	case existing.Managed && !opt.Link && !opt.InPlace && sharesInode(existing.Path, fi):
		// Added by an older scopectl as a hardlink of this very file: give the library its
		// own bytes, so that editing the file no longer damages the entry.
		method, err := l.ingestTo(abs, existing.SHA256, existing.Path, ingestOpts{src: fi, replace: true})
		if err != nil {
			return nil, err
		}
		l.rememberBlob(ctx, existing.Path, existing.SHA256)
		res.Method, res.Note = method, "the library now keeps its own copy (it was a hardlink of "+abs+")"
	case !existing.Managed && !opt.InPlace:
		// Indexed in place before; now the user wants the library to keep a copy.
		method, err := l.ingest(abs, existing.SHA256, ingestOpts{link: opt.Link, src: fi})
		if err != nil {
			return nil, err
		}
		existing.Path, existing.Managed = l.BlobPath(existing.SHA256), true
		if err := l.Store.UpdateLoRA(ctx, existing); err != nil {
			return nil, err
		}
		l.rememberBlob(ctx, existing.Path, existing.SHA256)
		res.Method = method
	case !existing.Managed && dmg != nil && existing.Path != abs:
		existing.Path = abs
		if err := l.Store.UpdateLoRA(ctx, existing); err != nil {
			return nil, err
		}
		res.Method, res.Note = "moved", "its file "+dmg.Path+" "+dmg.Detail+"; the entry now points here"
	}
	got, err := l.Store.GetBySHA(ctx, existing.SHA256)
	res.LoRA = got
	return res, err
}

func sharesInode(path string, fi os.FileInfo) bool {
	bi, err := os.Stat(path)
	return err == nil && os.SameFile(bi, fi)
}

// addNew makes a new entry of the file at abs (content sha256 rep.SHA256).
func (l *Library) addNew(ctx context.Context, abs string, fi os.FileInfo, rep *lora.Report, opt AddOptions) (*AddResult, error) {
	sha := rep.SHA256
	name := opt.Name
	if name == "" {
		name = lora.DisplayName(abs)
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	note := ""
	if other, err := l.Store.GetLoRA(ctx, name); err == nil && other.Name == name {
		if !opt.uniqueName {
			var dmg *DamagedError
			if errors.As(l.Check(ctx, other), &dmg) {
				return nil, fmt.Errorf("name %q is used by a damaged entry (sha256 %.12s: its file %s %s); forget it first with `scopectl lora rm %s`, or choose another name with --name",
					name, other.SHA256, dmg.Path, dmg.Detail, quoteArg(name))
			}
			return nil, fmt.Errorf("name %q is already used by %s (sha256 %s); choose another with --name", name, other.Path, other.SHA256[:12])
		}
		alt := name + "-" + sha[:8]
		if len(alt) > 200 {
			alt = name[:200-9] + "-" + sha[:8]
		}
		if o2, err := l.Store.GetLoRA(ctx, alt); err == nil && o2.Name == alt {
			return nil, fmt.Errorf("%s: names %q and %q are already used by other entries; `scopectl lora scan %s --name NAME` chooses one", abs, name, alt, quoteArg(abs))
		}
		note = fmt.Sprintf("named %s: %q is used by another entry (sha256 %.12s)", alt, name, other.SHA256)
		name = alt
	}
	info, _ := json.Marshal(rep)
	entry := store.LoRA{
		SHA256: sha, Name: name, Size: rep.Bytes, Path: abs, Family: string(rep.Family),
		Base: rep.Base, Rank: rep.Rank, Info: info, Origins: []store.Origin{origin(opt, abs)},
	}
	method := "indexed"
	if !opt.InPlace {
		var err error
		if method, err = l.ingest(abs, sha, ingestOpts{link: opt.Link, src: fi}); err != nil {
			return nil, err
		}
		entry.Path, entry.Managed = l.BlobPath(sha), true
	}
	if err := l.Store.AddLoRA(ctx, entry); err != nil {
		return nil, err
	}
	if entry.Managed {
		l.rememberBlob(ctx, entry.Path, sha)
	}
	got, err := l.Store.GetBySHA(ctx, sha)
	return &AddResult{Status: "added", Method: method, Note: note, LoRA: got}, err
}

// rememberBlob records the sha256 of a blob scopectl has just written and verified (or
// linked to a file it has just read in full).
func (l *Library) rememberBlob(ctx context.Context, path, sha string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	ino, _ := inode(fi)
	_ = l.Store.PutFileHash(ctx, store.FileHash{Path: path, Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), Inode: ino, SHA256: sha, CheckedAt: time.Now()})
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

// ingestOpts controls ingestTo.
type ingestOpts struct {
	link    bool        // a hardlink is acceptable (tried first)
	replace bool        // replace dst even when it holds the right content (it is a hardlink to give up)
	src     os.FileInfo // src as it was when it was hashed: a reflink or hardlink of a changed src is refused
}

// ingest stores src as the blob for sha.
func (l *Library) ingest(src, sha string, opt ingestOpts) (string, error) {
	return l.ingestTo(src, sha, l.BlobPath(sha), opt)
}

// ingestTo stores src (whose sha256 is sha) at dst so that the library owns the bytes: a
// reflink where the filesystem shares extents copy-on-write, else a copy verified against
// sha; a hardlink only with opt.link. dst only ever names complete content.
func (l *Library) ingestTo(src, sha, dst string, opt ingestOpts) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() && !opt.replace {
		// A blob left by an interrupted add: keep it only if it is intact.
		if got, err := lora.HashFile(dst); err == nil && got == sha {
			return "existing", nil
		}
	}
	changed := func() error {
		if opt.src == nil {
			return nil
		}
		if now, err := os.Stat(src); err != nil || !sameStat(opt.src, now) {
			return fmt.Errorf("%s changed while it was being added; add it again", src)
		}
		return nil
	}
	if opt.link {
		// Link next to the final name, then rename, so the blob path never names anything
		// but complete content.
		tmp := dst + ".link-tmp"
		_ = os.Remove(tmp)
		if err := os.Link(src, tmp); err == nil {
			if err := changed(); err != nil {
				os.Remove(tmp)
				return "", err
			}
			if err := os.Rename(tmp, dst); err == nil {
				_ = atomicfile.SyncDir(filepath.Dir(dst))
				return "hardlink", nil
			}
			_ = os.Remove(tmp)
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
	fi, err := in.Stat()
	if err != nil {
		return "", err
	}
	method := "reflink"
	if reflink(af.File, in) == nil {
		if err := changed(); err != nil {
			return "", err
		}
	} else {
		method = "copy"
		if _, err := af.Seek(0, io.SeekStart); err != nil {
			return "", err
		}
		if err := af.Truncate(0); err != nil {
			return "", err
		}
		h := sha256.New()
		t := l.Progress.Start("copy", filepath.Base(src), fi.Size())
		_, err = io.Copy(io.MultiWriter(af, h, t), in)
		t.Finish()
		if err != nil {
			return "", fmt.Errorf("copying %s into the library: %w", src, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != sha {
			return "", fmt.Errorf("%s changed while it was being added (sha256 %s, then %s); add it again", src, sha[:12], got[:12])
		}
	}
	if err := af.Commit(); err != nil {
		return "", err
	}
	// The blob carries the source's mtime (as cp -p), so that its recorded sha256 is
	// trusted at once rather than read again as a file modified just now.
	_ = os.Chtimes(dst, time.Time{}, fi.ModTime())
	return method, nil
}

// Remove deletes an entry, and its blob when the library owns it and no dataset uses it.
func (l *Library) Remove(ctx context.Context, ref string) (store.LoRA, error) {
	e, err := l.Store.GetLoRA(ctx, ref)
	if err != nil {
		return e, fmt.Errorf("%s: %w", ref, err)
	}
	if err := l.Store.DeleteLoRA(ctx, e.SHA256); err != nil {
		return e, err
	}
	if e.Managed && e.Path == l.BlobPath(e.SHA256) {
		// A training dataset may hold the same bytes (the blob store is shared).
		if used, err := l.datasetUses(ctx, e.SHA256); err != nil || used {
			return e, err
		}
		if err := os.Remove(e.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return e, err
		}
		_ = l.Store.DeleteFileHash(ctx, e.Path)
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
	Fix    string `json:"fix,omitempty"` // what to run: for damage, and for a blob still shared with another file
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
			v.Status, v.Detail, v.Fix = "missing", "file does not exist", Fix(e, true)
		case err != nil:
			v.Status, v.Detail, v.Fix = "missing", err.Error(), Fix(e, true)
		case fi.Size() != e.Size:
			v.Status, v.Detail, v.Fix = "corrupt", fmt.Sprintf("size %d, expected %d", fi.Size(), e.Size), Fix(e, false)
		default:
			start := time.Now()
			got, err := l.hash(e.Path, e.Name, fi.Size())
			switch {
			case err != nil:
				v.Status, v.Detail, v.Fix = "missing", err.Error(), Fix(e, true)
			case got != e.SHA256:
				v.Status, v.Detail, v.Fix = "corrupt", "sha256 "+got, Fix(e, false)
			default:
				l.remember(ctx, e.Path, fi, got, start)
				if _, nlink := inode(fi); e.Managed && nlink > 1 {
					v.Detail = "shares its bytes with another file (a hardlink): editing that file damages this entry"
					v.Fix = "`scopectl lora add` that file again: the library then keeps its own copy"
				}
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
