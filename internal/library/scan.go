package library

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/store"
)

// ScanOptions controls Scan.
type ScanOptions struct {
	Name string // entry name for new content; only when the scanned path is one file
}

// ScanFile is what Scan found at one path. Field names are part of --json.
type ScanFile struct {
	Path   string `json:"path"`
	Status string `json:"status"` // new | updated | known | unchanged | skipped
	Reason string `json:"reason,omitempty"`
	Name   string `json:"name,omitempty"` // the library entry it is, or was installed from
	SHA256 string `json:"sha256,omitempty"`
	// Hashed: read in full this time. false: its size, mtime and inode are those it had
	// when scopectl last read it, so its recorded sha256 was used.
	Hashed bool `json:"hashed"`
}

// ScanResult is what Scan did. Field names are part of --json.
type ScanResult struct {
	Files   []ScanFile     `json:"files"`
	Indexed []*AddResult   `json:"indexed"` // entries made or updated
	Counts  map[string]int `json:"counts"`  // per status, and "hashed"
}

// Scan indexes the Wan LoRAs in dir (or the one file dir names) where they lie.
//
// Each .safetensors file is, by status:
//   - unchanged: the library already knows it here (indexed in place, installed by
//     scopectl, or recorded when it was added) and its content is the same; it is not read
//     again while its size, mtime and inode are unchanged;
//   - known: content the library already has (an entry kept elsewhere, or a file scopectl
//     installed here); its path is recorded as another origin, not as a new entry;
//   - new: a new entry, named after the file (opt.Name for a single file); when that name
//     is used by other content, the name gets "-" and the first 8 hex digits of its sha256;
//   - updated: the file an entry was indexed at now holds other content; the entry (its
//     name) follows the file;
//   - skipped: not an intact Wan LoRA, or unreadable (Reason says why).
func (l *Library) Scan(ctx context.Context, dir string, opt ScanOptions) (*ScanResult, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	rfi, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if opt.Name != "" {
		if rfi.IsDir() {
			return nil, fmt.Errorf("--name names one file's entry: %s is a directory", dir)
		}
		if err := ValidName(opt.Name); err != nil {
			return nil, err
		}
	}
	var paths []string
	if !rfi.IsDir() {
		paths = []string{root}
	} else {
		blobs := l.BlobDir + string(filepath.Separator)
		err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			if d.IsDir() && strings.HasPrefix(p+string(filepath.Separator), blobs) {
				return filepath.SkipDir // the library's own blobs are not files to index
			}
			if d.IsDir() || !strings.HasSuffix(d.Name(), ".safetensors") || atomicfile.IsTemp(d.Name()) || !d.Type().IsRegular() {
				return nil
			}
			paths = append(paths, p)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	s := &scan{l: l, opt: opt, res: &ScanResult{Files: []ScanFile{}, Indexed: []*AddResult{}, Counts: map[string]int{}}}
	// What scopectl installed: the ownership records of the folders scanned and of those
	// it installed into (a converted file is recognised wherever it was copied to).
	var dirs []string
	for _, p := range paths {
		if d := filepath.Dir(p); len(dirs) == 0 || dirs[len(dirs)-1] != d {
			dirs = append(dirs, d)
		}
	}
	if s.installs, err = l.Installs(ctx, dirs...); err != nil {
		return nil, err
	}
	all, err := l.Store.ListLoRAs(ctx, store.Filter{})
	if err != nil {
		return nil, err
	}
	s.inPlace = map[string]store.LoRA{}
	for _, e := range all {
		if !e.Managed {
			s.inPlace[e.Path] = e
		}
	}
	for _, k := range []string{"new", "updated", "known", "unchanged", "skipped", "hashed"} {
		s.res.Counts[k] = 0
	}
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return s.res, err
		}
		f := s.one(ctx, p)
		s.res.Files = append(s.res.Files, f)
		s.res.Counts[f.Status]++
		if f.Hashed {
			s.res.Counts["hashed"]++
		}
	}
	return s.res, nil
}

type scan struct {
	l        *Library
	opt      ScanOptions
	res      *ScanResult
	installs []store.Install
	inPlace  map[string]store.LoRA // entries indexed in place, by path
}

func (s *scan) one(ctx context.Context, p string) ScanFile {
	l := s.l
	f := ScanFile{Path: p}
	skip := func(err error) ScanFile {
		f.Status, f.Reason = "skipped", err.Error()
		return f
	}
	fi, err := os.Stat(p)
	if err != nil {
		return skip(err)
	}
	if sha := l.knownHash(ctx, p, fi); sha != "" {
		f.SHA256 = sha
		if ok, err := s.known(ctx, &f, fi); err != nil {
			return skip(err)
		} else if ok {
			return s.dropStale(ctx, f)
		}
	}
	rep, err := inspect(p, p)
	if err != nil {
		return skip(err)
	}
	if f.SHA256 == "" {
		start := time.Now()
		if f.SHA256, err = l.hash(p, filepath.Base(p), fi.Size()); err != nil {
			return skip(err)
		}
		f.Hashed = true
		l.remember(ctx, p, fi, f.SHA256, start)
		if ok, err := s.known(ctx, &f, fi); err != nil {
			return skip(err)
		} else if ok {
			return s.dropStale(ctx, f)
		}
	}
	// Content the library does not have.
	rep.SHA256 = f.SHA256
	opt := AddOptions{InPlace: true, Name: s.opt.Name, uniqueName: s.opt.Name == ""}
	f.Status = "new"
	stale, isStale := s.inPlace[p]
	if isStale && stale.SHA256 != f.SHA256 {
		if opt.Name == "" {
			opt.Name, opt.uniqueName = stale.Name, false
		}
		if err := l.Store.DeleteLoRA(ctx, stale.SHA256); err != nil && !errors.Is(err, store.ErrNotFound) {
			return skip(err)
		}
		delete(s.inPlace, p)
		f.Status, f.Reason = "updated", fmt.Sprintf("changed since it was indexed (sha256 was %.12s)", stale.SHA256)
	} else if in := s.installAt(p); in != nil {
		f.Reason = fmt.Sprintf("scopectl installed %q here, but the file was changed since", in.Name)
	}
	r, err := l.addNew(ctx, p, fi, rep, opt)
	if err != nil {
		return skip(err)
	}
	if r.Note != "" {
		f.Reason = strings.TrimPrefix(f.Reason+"; "+r.Note, "; ")
	}
	f.Name = r.LoRA.Name
	s.inPlace[p] = r.LoRA
	s.res.Indexed = append(s.res.Indexed, r)
	return f
}

// installAt returns the install scopectl recorded at path p, if any.
func (s *scan) installAt(p string) *store.Install {
	dir, file := filepath.Dir(p), filepath.Base(p)
	for i := range s.installs {
		if s.installs[i].Dir == dir && s.installs[i].File == file {
			return &s.installs[i]
		}
	}
	return nil
}

// known classifies f (whose SHA256 is set) when the library already knows its content:
// a file scopectl installed, the file of an in-place entry, or an entry's content kept
// elsewhere. It reports false for content the library does not have.
func (s *scan) known(ctx context.Context, f *ScanFile, fi os.FileInfo) (bool, error) {
	l := s.l
	status := "known"
	if !f.Hashed {
		status = "unchanged"
	}
	if in := s.installAt(f.Path); in != nil && in.SHA256 == f.SHA256 {
		f.Status, f.Name, f.Reason = status, in.Name, fmt.Sprintf("installed by scopectl from library entry %q", in.Name)
		return true, nil
	}
	for _, in := range s.installs {
		if in.SHA256 == f.SHA256 && in.SHA256 != in.SourceSHA256 {
			f.Status, f.Name, f.Reason = status, in.Name, fmt.Sprintf("what scopectl installs for library entry %q (converted for Scope)", in.Name)
			return true, nil
		}
	}
	e, err := l.Store.GetBySHA(ctx, f.SHA256)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	f.Name = e.Name
	if !e.Managed && e.Path == f.Path {
		f.Status, f.Reason = "unchanged", "indexed here"
		return true, nil
	}
	if !f.Hashed {
		// Known from an earlier read (lora add of this file, or an earlier scan).
		f.Status, f.Reason = "unchanged", fmt.Sprintf("same content as library entry %q", e.Name)
		return true, nil
	}
	r, err := l.addExisting(ctx, f.Path, fi, e, AddOptions{InPlace: true})
	if err != nil {
		return false, err
	}
	f.Status, f.Reason = "known", fmt.Sprintf("same content as library entry %q", e.Name)
	if r.Note != "" {
		f.Reason += "; " + r.Note
	}
	if r.Method == "moved" {
		s.inPlace[f.Path] = r.LoRA
	}
	return true, nil
}

// dropStale: when the file an entry was indexed at in place now holds content the library
// has anyway (f), that entry's content is gone; it is removed and f reported as updated.
func (s *scan) dropStale(ctx context.Context, f ScanFile) ScanFile {
	stale, ok := s.inPlace[f.Path]
	if !ok || stale.SHA256 == f.SHA256 {
		return f
	}
	if err := s.l.Store.DeleteLoRA(ctx, stale.SHA256); err != nil && !errors.Is(err, store.ErrNotFound) {
		f.Status, f.Reason = "skipped", err.Error()
		return f
	}
	delete(s.inPlace, f.Path)
	f.Status = "updated"
	f.Reason = fmt.Sprintf("changed since it was indexed as %q (sha256 was %.12s); now %s", stale.Name, stale.SHA256, f.Reason)
	return f
}
