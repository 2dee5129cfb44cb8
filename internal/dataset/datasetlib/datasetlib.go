// Package datasetlib keeps training datasets in scopectl's library, content-addressed
// as LoRAs are: every file a blob by sha256 in the library's blob store (the same bytes
// kept once across datasets, versions and LoRAs), and every version of a named dataset
// a manifest (dataset.Manifest) whose sha256 is its id, the hash a training job records.
//
// A version becomes visible in one store transaction after all its blobs are in place,
// so an interrupted add leaves nothing to see, and adding again finds the blobs already
// stored (their sha256s recorded by size, mtime and inode) and copies nothing twice.
package datasetlib

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
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/store"
)

// ErrRefused is returned by Add when the dataset check found errors and Force was not set.
var ErrRefused = errors.New("refused")

// Lib is the dataset side of a library.
type Lib struct {
	Lib      *library.Library
	Store    store.DatasetStore
	Progress progress.Reporter // hashing and copying of a folder, as one operation each
}

// New returns the dataset side of lib (its store must keep datasets).
func New(lib *library.Library) (*Lib, error) {
	ds, ok := lib.Store.(store.DatasetStore)
	if !ok {
		return nil, errors.New("this store does not keep datasets")
	}
	return &Lib{Lib: lib, Store: ds, Progress: lib.Progress}, nil
}

// ValidName checks a dataset name: a library name (library.ValidName) without '@',
// which separates a version (NAME@2).
func ValidName(name string) error {
	if err := library.ValidName(name); err != nil {
		return fmt.Errorf("dataset %w", err)
	}
	if strings.Contains(name, "@") {
		return fmt.Errorf("dataset name %q: must not contain '@' (NAME@VERSION names a version)", name)
	}
	return nil
}

// Ref names a dataset version: NAME (the newest) or NAME@VERSION.
type Ref struct {
	Name    string
	Version int // 0: the newest
}

func (r Ref) String() string {
	if r.Version > 0 {
		return r.Name + "@" + strconv.Itoa(r.Version)
	}
	return r.Name
}

// ParseRef reads NAME, NAME@N or NAME@vN.
func ParseRef(s string) (Ref, error) {
	name, ver, has := strings.Cut(s, "@")
	r := Ref{Name: name}
	if err := ValidName(name); err != nil {
		return r, err
	}
	if has {
		n, err := strconv.Atoi(strings.TrimPrefix(ver, "v"))
		if err != nil || n < 1 {
			return r, fmt.Errorf("dataset %q: version %q: want a number from 1 (NAME@2)", s, ver)
		}
		r.Version = n
	}
	return r, nil
}

// Get returns a dataset version and its manifest, read back and checked against its id.
func (l *Lib) Get(ctx context.Context, ref string) (store.Dataset, dataset.Manifest, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return store.Dataset{}, dataset.Manifest{}, err
	}
	d, err := l.Store.GetDataset(ctx, r.Name, r.Version)
	if err != nil {
		return d, dataset.Manifest{}, err
	}
	m, err := dataset.ParseManifest(d.Manifest)
	if err != nil {
		return d, m, fmt.Errorf("dataset %s@%d: stored manifest: %w", d.Name, d.Version, err)
	}
	if got := m.SHA256(); got != d.ManifestSHA {
		return d, m, fmt.Errorf("dataset %s@%d: stored manifest has sha256 %.12s, recorded %.12s: the index is damaged", d.Name, d.Version, got, d.ManifestSHA)
	}
	return d, m, nil
}

// CheckSummary is what `dataset check` said when a version was added. Field names are
// part of --json.
type CheckSummary struct {
	NumFrames       int     `json:"num_frames"`
	Arch            string  `json:"arch"`
	Videos          int     `json:"videos"`
	Images          int     `json:"images"`
	Skipped         int     `json:"skipped"`
	Trained         int     `json:"trained"`
	VideoSeconds    float64 `json:"video_seconds"`
	Errors          int     `json:"errors"`
	Warnings        int     `json:"warnings"`
	Notes           int     `json:"notes"`
	ChangesTraining int     `json:"changes_training"` // warnings that silently change training
	Forced          bool    `json:"forced,omitempty"` // added with errors (--force)
}

func summarize(r *dataset.Report, forced bool) CheckSummary {
	t := r.Totals
	s := CheckSummary{NumFrames: r.Options.NumFrames, Arch: r.Options.Arch, Videos: t.Videos, Images: t.Images, Skipped: t.Skipped,
		Trained: t.Trained, VideoSeconds: t.VideoSeconds, Errors: t.Errors, Warnings: t.Warnings, Notes: t.Infos, Forced: forced}
	count := func(fs []dataset.Finding) {
		for _, f := range fs {
			if f.Changes {
				s.ChangesTraining++
			}
		}
	}
	count(r.Findings)
	for _, it := range r.Items {
		count(it.Findings)
	}
	return s
}

// CheckOptions are the settings a folder is checked with when none are given: ai-toolkit's
// defaults, and for a folder with videos a Wan video dataset as `train init` writes it
// (81 frames, 16 fps, resolution 640), so that its clips are read as clips.
func CheckOptions(f *dataset.Folder) dataset.Options {
	o := dataset.DefaultOptions()
	for _, ff := range f.Files {
		if ff.Media && !dataset.IsImage(ff.Path) {
			o.NumFrames, o.FPS, o.Resolutions = 81, 16, []int{640}
			break
		}
	}
	return o
}

// AddInput describes a folder to add.
type AddInput struct {
	Dir   string
	Name  string
	Check dataset.Options // how `dataset check` reads it (zero NumFrames: CheckOptions)
	Force bool            // add even when the check finds errors
}

// AddResult says what Add did. Field names are part of --json.
type AddResult struct {
	Status  string        `json:"status"` // added | unchanged | refused
	Dataset store.Dataset `json:"dataset"`
	// Previous is the version before this one (0 for a new name).
	Previous int `json:"previous_version,omitempty"`
	// Blobs: how many distinct files were stored now (copied or reflinked), and how many
	// the library already held (from another dataset, version, LoRA or an interrupted add).
	Stored      int   `json:"stored"`
	Existing    int   `json:"existing"`
	StoredBytes int64 `json:"stored_bytes"`
	// Hashed counts the files read to hash them (the others' sha256s were recorded).
	Hashed  int                   `json:"hashed"`
	Skipped []dataset.SkippedFile `json:"skipped,omitempty"`
	Check   CheckSummary          `json:"check"`
	Report  *dataset.Report       `json:"-"`
}

// Add checks the folder (dataset.Check), refuses errors unless in.Force, hashes its files
// (dataset.ListFolder's rules), stores each as a blob, and records the manifest as the
// next version of in.Name, or nothing when it equals the newest version.
func (l *Lib) Add(ctx context.Context, in AddInput) (*AddResult, error) {
	if err := ValidName(in.Name); err != nil {
		return nil, err
	}
	folder, err := dataset.ListFolder(ctx, in.Dir)
	if err != nil {
		return nil, err
	}
	res := &AddResult{Status: "refused", Skipped: folder.Skipped}
	opts := in.Check
	if opts.NumFrames == 0 {
		opts = CheckOptions(folder)
	}
	rep, err := dataset.Check(ctx, folder.Dir, opts)
	if err != nil {
		return nil, err
	}
	res.Report, res.Check = rep, summarize(rep, in.Force && rep.Totals.Errors > 0)
	if len(folder.Files) == 0 {
		return res, fmt.Errorf("%s: no media ai-toolkit reads (%s %s)", in.Dir, "images", "videos")
	}
	if rep.Totals.Errors > 0 && !in.Force {
		return res, fmt.Errorf("%w: %s: dataset check found %d error(s) (--force adds it anyway)", ErrRefused, in.Dir, rep.Totals.Errors)
	}
	// Hash, as one operation over the folder: files recorded unchanged are not read.
	stats := make([]os.FileInfo, len(folder.Files))
	var total int64
	for i, f := range folder.Files {
		fi, err := os.Stat(f.Abs)
		if err != nil {
			return res, err
		}
		stats[i] = fi
		folder.Files[i].Size = fi.Size()
		total += fi.Size()
	}
	tr := l.Progress.Start("hash", filepath.Base(folder.Dir), total)
	idx := map[string]int{}
	for i, f := range folder.Files {
		idx[f.Abs] = i
	}
	var hashed atomic.Int64
	err = folder.Hash(ctx, func(ctx context.Context, abs string, size int64) (string, error) {
		fi := stats[idx[abs]]
		if sha := l.Lib.CachedSHA(ctx, abs, fi); sha != "" {
			tr.Add(size)
			return sha, nil
		}
		start := time.Now()
		sha, err := hashFile(ctx, abs, size, tr)
		if err != nil {
			return "", err
		}
		l.Lib.RememberSHA(ctx, abs, fi, sha, start)
		hashed.Add(1)
		return sha, nil
	})
	tr.Finish()
	if err != nil {
		return res, err
	}
	res.Hashed = int(hashed.Load())
	m, err := folder.Manifest()
	if err != nil {
		return res, err
	}
	// Blobs first, the version last: what is visible is always complete.
	var copyTotal int64
	seen := map[string]bool{}
	for _, f := range folder.Files {
		if !seen[f.SHA256] {
			seen[f.SHA256] = true
			copyTotal += f.Size
		}
	}
	ct := l.Progress.Start("store", filepath.Base(folder.Dir), copyTotal)
	seen = map[string]bool{}
	blobs := []string{}
	for i, f := range folder.Files {
		if seen[f.SHA256] {
			continue
		}
		seen[f.SHA256] = true
		blobs = append(blobs, f.SHA256)
		method, err := l.Lib.StoreBlob(ctx, f.Abs, f.SHA256, stats[i])
		if err != nil {
			ct.Finish()
			return res, fmt.Errorf("%s: %w", f.Path, err)
		}
		ct.Add(f.Size)
		if method == "existing" {
			res.Existing++
		} else {
			res.Stored++
			res.StoredBytes += f.Size
		}
	}
	ct.Finish()
	vids, imgs := m.Items()
	check, _ := json.Marshal(res.Check)
	d := store.Dataset{Name: in.Name, ManifestSHA: m.SHA256(), Files: len(m.Files), Items: vids + imgs, Bytes: m.TotalBytes(),
		SourceDir: folder.Dir, Manifest: m.Bytes(), Check: check}
	if prev, err := l.Store.GetDataset(ctx, in.Name, 0); err == nil {
		res.Previous = prev.Version
	} else if !errors.Is(err, store.ErrNotFound) {
		return res, err
	}
	got, added, err := l.Store.AddDatasetVersion(ctx, d, blobs)
	if err != nil {
		return res, err
	}
	res.Dataset, res.Status = got, "added"
	if !added {
		res.Status, res.Previous = "unchanged", 0
	}
	return res, nil
}

// hashFile is dataset.FileSHA256 counting the bytes it reads into tr.
func hashFile(ctx context.Context, abs string, size int64, tr *progress.Tracker) (string, error) {
	return dataset.FileSHA256Progress(ctx, abs, size, tr)
}

// copySHA256 copies src to dst (and progress), returning the sha256 and size of what it
// copied.
func copySHA256(ctx context.Context, dst io.Writer, src io.Reader, progress io.Writer) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(dst, h, progress), ctxReader{ctx, src})
	return hex.EncodeToString(h.Sum(nil)), n, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// Entry is a dataset in `dataset ls`: its newest version and how many it has.
type Entry struct {
	store.Dataset
	Versions int `json:"versions"`
}

// List returns every dataset's newest version, by name.
func (l *Lib) List(ctx context.Context) ([]Entry, error) {
	all, err := l.Store.ListDatasets(ctx)
	if err != nil {
		return nil, err
	}
	out := []Entry{}
	for _, d := range all {
		if n := len(out); n > 0 && out[n-1].Name == d.Name {
			out[n-1].Dataset, out[n-1].Versions = d, out[n-1].Versions+1
			continue
		}
		out = append(out, Entry{Dataset: d, Versions: 1})
	}
	return out, nil
}

// JobRef is a training job that trained on a dataset version.
type JobRef struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Phase       string `json:"phase,omitempty"`
	Checkpoints int    `json:"checkpoints"` // collected into the library
}

// Version is one version in `dataset show`. Field names are part of --json.
type Version struct {
	store.Dataset
	Jobs []JobRef `json:"jobs"`
}

// ShowResult is `dataset show`. Field names are part of --json.
type ShowResult struct {
	Name     string                 `json:"name"`
	Versions []Version              `json:"versions"`
	Version  int                    `json:"version"` // the one whose files are listed
	Files    []dataset.ManifestFile `json:"files"`
	Check    *CheckSummary          `json:"check,omitempty"`
}

// Show returns every version of a dataset, the jobs trained on each, and the files and
// check summary of the version ref names (the newest for a bare name).
func (l *Lib) Show(ctx context.Context, ref string) (*ShowResult, error) {
	d, m, err := l.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	all, err := l.Store.ListDatasets(ctx)
	if err != nil {
		return nil, err
	}
	res := &ShowResult{Name: d.Name, Version: d.Version, Files: m.Files, Versions: []Version{}}
	if res.Files == nil {
		res.Files = []dataset.ManifestFile{}
	}
	var cs CheckSummary
	if len(d.Check) > 0 && json.Unmarshal(d.Check, &cs) == nil {
		res.Check = &cs
	}
	var jobs []store.TrainJob
	ts, _ := l.Lib.Store.(store.TrainStore)
	if ts != nil {
		if jobs, err = ts.ListTrainJobs(ctx); err != nil {
			return nil, err
		}
	}
	for _, v := range all {
		if v.Name != d.Name {
			continue
		}
		ver := Version{Dataset: v, Jobs: []JobRef{}}
		for _, j := range jobs {
			if j.DatasetSHA != v.ManifestSHA {
				continue
			}
			cps, err := ts.ListTrainCheckpoints(ctx, j.ID)
			if err != nil {
				return nil, err
			}
			ver.Jobs = append(ver.Jobs, JobRef{ID: j.ID, Name: j.Name, Phase: j.Phase, Checkpoints: len(cps)})
		}
		res.Versions = append(res.Versions, ver)
	}
	return res, nil
}

// RemoveResult says what Remove did. Field names are part of --json.
type RemoveResult struct {
	Removed      []store.Dataset `json:"removed"`
	BlobsRemoved int             `json:"blobs_removed"`
	BytesFreed   int64           `json:"bytes_freed"`
	// BlobsKept are the dataset's blobs another dataset version or a LoRA still uses.
	BlobsKept int `json:"blobs_kept"`
}

// Remove forgets every version of a dataset and deletes the blobs nothing else uses
// (another dataset's version, a LoRA entry).
func (l *Lib) Remove(ctx context.Context, name string) (*RemoveResult, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	vs, err := l.Store.ListDatasets(ctx)
	if err != nil {
		return nil, err
	}
	sizes := map[string]int64{}
	for _, v := range vs {
		if v.Name != name {
			continue
		}
		_, m, err := l.Get(ctx, fmt.Sprintf("%s@%d", v.Name, v.Version))
		if err != nil {
			return nil, err
		}
		for _, f := range m.Files {
			sizes[f.SHA256] = f.Size
		}
	}
	removed, unlisted, err := l.Store.DeleteDataset(ctx, name)
	if err != nil {
		return nil, err
	}
	res := &RemoveResult{Removed: removed}
	for _, sha := range unlisted {
		ok, err := l.Lib.RemoveBlob(ctx, sha)
		if err != nil {
			return res, err
		}
		if ok {
			res.BlobsRemoved++
			res.BytesFreed += sizes[sha]
		}
	}
	res.BlobsKept = len(sizes) - res.BlobsRemoved
	return res, nil
}

// Files lists a version's files as they are read from the library (Abs: the blob), each
// blob checked to be there with its size; the sha256 is verified by whoever reads it.
func (l *Lib) Files(ctx context.Context, ref string) (store.Dataset, []dataset.FolderFile, error) {
	d, m, err := l.Get(ctx, ref)
	if err != nil {
		return d, nil, err
	}
	out := make([]dataset.FolderFile, 0, len(m.Files))
	for _, f := range m.Files {
		p := l.Lib.BlobPath(f.SHA256)
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			return d, nil, fmt.Errorf("dataset %s@%d: %s (sha256 %.12s) is missing from the library; `scopectl dataset add` its folder again", d.Name, d.Version, f.Path, f.SHA256)
		case fi.Size() != f.Size:
			return d, nil, fmt.Errorf("dataset %s@%d: %s: its blob has %d bytes, not %d (damaged); `scopectl dataset add` its folder again", d.Name, d.Version, f.Path, fi.Size(), f.Size)
		}
		out = append(out, dataset.FolderFile{ManifestFile: f, Abs: p, Media: dataset.IsMedia(f.Path)})
	}
	return d, out, nil
}

// ExportResult says what Export wrote. Field names are part of --json.
type ExportResult struct {
	Dataset store.Dataset `json:"dataset"`
	Dir     string        `json:"dir"`
	Files   int           `json:"files"`
	Bytes   int64         `json:"bytes"`
}

// Export writes a version's files into dir, which must not exist: into a hidden
// temporary folder beside it, each file copied from its blob and checked against its
// sha256, then renamed to dir, so dir only ever appears complete.
func (l *Lib) Export(ctx context.Context, ref, dir string) (*ExportResult, error) {
	d, m, err := l.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(abs); err == nil {
		return nil, fmt.Errorf("%s exists: export writes a new folder", dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	parent := filepath.Dir(abs)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(abs)+".export-")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	tr := l.Progress.Start("export", d.Name, m.TotalBytes())
	defer tr.Finish()
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := l.exportFile(ctx, tmp, f, tr); err != nil {
			return nil, fmt.Errorf("dataset %s@%d: %s: %w", d.Name, d.Version, f.Path, err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, abs); err != nil {
		return nil, err
	}
	done = true
	syncDir(parent)
	return &ExportResult{Dataset: d, Dir: abs, Files: len(m.Files), Bytes: m.TotalBytes()}, nil
}

// exportFile copies f's blob to its path under root, verifying the sha256 as it copies.
func (l *Lib) exportFile(ctx context.Context, root string, f dataset.ManifestFile, tr io.Writer) error {
	if err := dataset.ValidPath(f.Path); err != nil { // ParseManifest checked it; kept next to the join
		return err
	}
	dst := filepath.Join(root, filepath.FromSlash(f.Path))
	if rel, err := filepath.Rel(root, dst); err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("path outside the folder")
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(l.Lib.BlobPath(f.SHA256))
	if err != nil {
		return fmt.Errorf("its blob (sha256 %.12s) is missing from the library: %w", f.SHA256, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	sha, n, err := copySHA256(ctx, out, in, tr)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if sha != f.SHA256 || n != f.Size {
		return fmt.Errorf("its blob is damaged (%d bytes, sha256 %.12s; want %d, %.12s); `scopectl dataset add` its folder again", n, sha, f.Size, f.SHA256)
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// Check runs dataset.Check on a version as ai-toolkit will read it: its files linked
// (or copied) from their blobs into a scratch folder in the data dir, removed after.
func (l *Lib) Check(ctx context.Context, ref string, opts dataset.Options) (*dataset.Report, error) {
	d, m, err := l.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	scratch := filepath.Join(filepath.Dir(l.Lib.BlobDir), "tmp")
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(scratch, "dataset-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for _, f := range m.Files {
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		src := l.Lib.BlobPath(f.SHA256)
		if err := os.Link(src, dst); err != nil {
			if err := copyFile(src, dst); err != nil {
				return nil, fmt.Errorf("dataset %s@%d: %s: %w", d.Name, d.Version, f.Path, err)
			}
		}
	}
	rep, err := dataset.Check(ctx, dir, opts)
	if err != nil {
		return nil, err
	}
	rep.Dir = fmt.Sprintf("%s@%d", d.Name, d.Version)
	return rep, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
