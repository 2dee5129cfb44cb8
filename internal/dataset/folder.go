package dataset

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// FolderFile is a file of a dataset folder that belongs in its manifest.
type FolderFile struct {
	ManifestFile
	Abs string `json:"-"` // where it is read from (a symlink inside the folder is read through)
	// Media is true for files of ai-toolkit's image and video extensions; the others are
	// sidecars (captions and whatever else is named after a media file).
	Media bool `json:"media,omitempty"`
}

// SkippedFile is a file of the folder that is not part of the dataset, and why.
type SkippedFile struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Folder is what of a dataset folder is kept: the files ai-toolkit reads (media of its
// extensions, and the captions and other sidecars named after them, _controls folders
// included) with their sizes, and what is left out. SHA256s are filled by Hash.
type Folder struct {
	Dir     string        `json:"dir"`
	Files   []FolderFile  `json:"files"`
	Skipped []SkippedFile `json:"skipped,omitempty"`
}

// cacheDirs are the folders ai-toolkit writes into a dataset itself (latents and text
// embeddings): derived data, made again on the machine.
var cacheDirs = map[string]bool{"_latent_cache": true, "_t_e_cache": true}

// ListFolder lists a dataset folder by the rules ai-toolkit reads it with (see
// Check's walk): hidden files and folders, its own caches and symlinked folders are left
// out; media of ai-toolkit's extensions are kept with every file named after them
// (clip.mp4's clip.txt caption, whatever caption_ext a config picks), in _controls
// folders too; other files are listed as skipped. A symlinked file is kept when it
// points to a regular file inside the folder, and skipped when it points outside it. A
// name a manifest cannot hold (a control character, not UTF-8) is an error naming it.
func ListFolder(ctx context.Context, dir string) (*Folder, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: not a folder", dir)
	}
	f := &Folder{Dir: abs}
	type cand struct {
		rel, abs string
		size     int64
	}
	byDir := map[string][]cand{}
	var dirs []string
	skip := func(rel, why string) { f.Skipped = append(f.Skipped, SkippedFile{Path: rel, Reason: why}) }
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		name := d.Name()
		if d.IsDir() {
			switch {
			case strings.HasPrefix(name, "."):
				skip(rel+"/", "hidden folder: ai-toolkit does not read it")
				return filepath.SkipDir
			case cacheDirs[name]:
				skip(rel+"/", "ai-toolkit's own cache: made again on the machine")
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(name, ".") {
			skip(rel, "hidden file: ai-toolkit does not read it")
			return nil
		}
		src, size := p, int64(0)
		switch t := d.Type(); {
		case t.IsRegular():
			fi, err := d.Info()
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			size = fi.Size()
		case t&fs.ModeSymlink != 0:
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				skip(rel, "broken symlink")
				return nil
			}
			fi, err := os.Stat(target)
			switch {
			case err != nil:
				skip(rel, "symlink: "+err.Error())
				return nil
			case fi.IsDir():
				skip(rel, "symlinked folder: not followed (ai-toolkit's os.walk does not follow it)")
				return nil
			case !fi.Mode().IsRegular():
				skip(rel, "symlink to something that is not a regular file")
				return nil
			}
			if in, err := filepath.Rel(root, target); err != nil || in == ".." || strings.HasPrefix(in, ".."+string(filepath.Separator)) {
				skip(rel, "symlink to a file outside the folder: not stored (copy the file in)")
				return nil
			}
			src, size = target, fi.Size()
		default:
			skip(rel, "not a regular file")
			return nil
		}
		if err := ValidPath(rel); err != nil {
			return fmt.Errorf("%s: %v: rename it (a dataset cannot hold this name)", p, err)
		}
		dirRel := filepath.ToSlash(filepath.Dir(rel))
		if _, ok := byDir[dirRel]; !ok {
			dirs = append(dirs, dirRel)
		}
		byDir[dirRel] = append(byDir[dirRel], cand{rel: rel, abs: src, size: size})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		stems := map[string]bool{}
		for _, c := range byDir[d] {
			if isMediaName(c.rel) {
				stems[strings.TrimSuffix(filepath.Base(c.rel), filepath.Ext(c.rel))] = true
			}
		}
		for _, c := range byDir[d] {
			ff := FolderFile{ManifestFile: ManifestFile{Path: c.rel, Size: c.size}, Abs: c.abs, Media: isMediaName(c.rel)}
			if !ff.Media && !sidecar(filepath.Base(c.rel), stems) {
				why := "ai-toolkit reads " + strings.Join(imageExts, " ") + " " + strings.Join(videoExts, " ") + " and the captions beside them only"
				if hasExt(c.rel, []string{".txt", ".caption"}) {
					why = "caption without media: ai-toolkit does not read it"
				}
				skip(c.rel, why)
				continue
			}
			f.Files = append(f.Files, ff)
		}
	}
	sort.Slice(f.Files, func(i, j int) bool { return f.Files[i].Path < f.Files[j].Path })
	sort.Slice(f.Skipped, func(i, j int) bool { return f.Skipped[i].Path < f.Skipped[j].Path })
	return f, nil
}

func isMediaName(name string) bool { return hasExt(name, imageExts) || hasExt(name, videoExts) }

// IsMedia reports whether ai-toolkit reads a file of this name as an image or a video
// (its extension lists, any case).
func IsMedia(name string) bool { return isMediaName(name) }

// IsImage reports whether ai-toolkit reads a file of this name as an image.
func IsImage(name string) bool { return hasExt(name, imageExts) }

// sidecar reports whether name is named after a media file of its folder: the media's
// name without its extension, then ".…" (clip.txt, clip.caption, clip.en.txt for clip.mp4).
func sidecar(name string, stems map[string]bool) bool {
	for s := name; ; {
		i := strings.LastIndexByte(s, '.')
		if i <= 0 {
			return false
		}
		s = s[:i]
		if stems[s] {
			return true
		}
	}
}

// HashFunc returns the sha256 of the file at abs (size bytes as listed).
type HashFunc func(ctx context.Context, abs string, size int64) (string, error)

// FileSHA256 reads the file at abs in full and returns its sha256; a size other than
// the one listed means the file changed since, and is an error.
func FileSHA256(ctx context.Context, abs string, size int64) (string, error) {
	return FileSHA256Progress(ctx, abs, size, nil)
}

// FileSHA256Progress is FileSHA256 writing the bytes it reads to progress too (nil: not).
func FileSHA256Progress(ctx context.Context, abs string, size int64, progress io.Writer) (string, error) {
	fh, err := os.Open(abs)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	var w io.Writer = h
	if progress != nil {
		w = io.MultiWriter(h, progress)
	}
	n, err := io.Copy(w, readerCtx{ctx, fh})
	if err != nil {
		return "", fmt.Errorf("%s: %w", abs, err)
	}
	if n != size {
		return "", fmt.Errorf("%s changed while it was read (%d bytes, listed with %d); try again", abs, n, size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// Hash fills in every file's sha256 with hash (FileSHA256 when nil), a few files at a
// time.
func (f *Folder) Hash(ctx context.Context, hash HashFunc) error {
	if hash == nil {
		hash = FileSHA256
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, min(4, max(1, runtime.GOMAXPROCS(0))))
	for i := range f.Files {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(ff *FolderFile) {
			defer func() { <-sem; wg.Done() }()
			sum, err := hash(ctx, ff.Abs, ff.Size)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				cancel()
				return
			}
			ff.SHA256 = sum
		}(&f.Files[i])
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// Manifest is the folder's manifest (after Hash).
func (f *Folder) Manifest() (Manifest, error) {
	files := make([]ManifestFile, len(f.Files))
	for i, ff := range f.Files {
		files[i] = ff.ManifestFile
	}
	return NewManifest(files)
}

// FolderManifest lists and hashes a dataset folder: the manifest `dataset add` stores
// for it and whose SHA256 `train run` records for a job trained on it.
func FolderManifest(ctx context.Context, dir string) (*Folder, Manifest, error) {
	f, err := ListFolder(ctx, dir)
	if err != nil {
		return nil, Manifest{}, err
	}
	if err := f.Hash(ctx, nil); err != nil {
		return f, Manifest{}, err
	}
	m, err := f.Manifest()
	return f, m, err
}
