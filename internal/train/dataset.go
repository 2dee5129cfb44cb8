package train

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/remote"
)

// datasetFile is one file of a dataset folder to send.
type datasetFile struct {
	Rel    string // slash-separated, relative to the folder
	Abs    string
	Size   int64
	SHA256 string
}

// skipDatasetEntry leaves out what ai-toolkit writes into a dataset folder itself
// (latent and text-embedding caches, its size database) and hidden entries, which it
// never reads.
func skipDatasetEntry(name string, dir bool) bool {
	if strings.HasPrefix(name, ".") {
		return true
	}
	return dir && (name == "_latent_cache" || name == "_t_e_cache")
}

// scanDataset lists and hashes a dataset folder. Its sha256 is that of the sorted
// "rel\x00size\x00sha256\n" lines: the same files give the same folder on the machine.
func scanDataset(dir string) ([]datasetFile, string, error) {
	var files []datasetFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if skipDatasetEntry(d.Name(), d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		sum, n, err := FileSHA256(p)
		if err != nil {
			return err
		}
		files = append(files, datasetFile{Rel: filepath.ToSlash(rel), Abs: p, Size: n, SHA256: sum})
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Rel < files[j].Rel })
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00%s\n", f.Rel, f.Size, f.SHA256)
	}
	return files, hex.EncodeToString(h.Sum(nil)), nil
}

// SyncStats says what a dataset sync moved.
type SyncStats struct {
	Files   int   `json:"files"`
	Sent    int   `json:"sent"`    // files sent (the others were there)
	Bytes   int64 `json:"bytes"`   // payload bytes sent
	Resumed int64 `json:"resumed"` // bytes an interrupted earlier send had left
}

// syncDataset sends files into remoteDir on the machine (ssh URL base + path), one
// remote per sub-folder, skipping files already there with their size: the folder is
// named by the content hash, and each Put publishes only verified content.
func syncDataset(ctx context.Context, open func(ctx context.Context, dir string) (remote.Remote, error), remoteDir string, files []datasetFile) (SyncStats, error) {
	st := SyncStats{Files: len(files)}
	byDir := map[string][]datasetFile{}
	var dirs []string
	for _, f := range files {
		d := path.Dir(f.Rel)
		if _, ok := byDir[d]; !ok {
			dirs = append(dirs, d)
		}
		byDir[d] = append(byDir[d], f)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		r, err := open(ctx, path.Join(remoteDir, d))
		if err != nil {
			return st, err
		}
		have := map[string]int64{}
		ents, err := r.List(ctx)
		if err != nil {
			r.Close()
			return st, err
		}
		for _, e := range ents {
			have[e.Name] = e.Size
		}
		// A few files at a time: small files are bound by round trips (verify, fsync,
		// rename on the far side), not bandwidth.
		var todo []datasetFile
		for _, f := range byDir[d] {
			if sz, ok := have[path.Base(f.Rel)]; !ok || sz != f.Size {
				todo = append(todo, f)
			}
		}
		var mu sync.Mutex
		var firstErr error
		sem := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for _, f := range todo {
			wg.Add(1)
			sem <- struct{}{}
			go func(f datasetFile) {
				defer func() { <-sem; wg.Done() }()
				fh, err := os.Open(f.Abs)
				var res remote.PutResult
				if err == nil {
					res, err = r.Put(ctx, path.Base(f.Rel), remote.Source{R: fh, Size: f.Size, SHA256: f.SHA256}, remote.PutOptions{})
					fh.Close()
				}
				mu.Lock()
				defer mu.Unlock()
				st.Bytes += res.Sent
				st.Resumed += res.Resumed
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("dataset %s: %w", f.Rel, err)
					}
					return
				}
				st.Sent++
			}(f)
		}
		wg.Wait()
		if firstErr != nil {
			r.Close()
			return st, firstErr
		}
		r.Close()
	}
	return st, nil
}

// DatasetOptions are dataset.Check's options for dataset d of process p: what ai-toolkit
// will do with that folder under that config (the CLI's `dataset check --config` and
// `train run` both use it).
func DatasetOptions(p *aitk.Process, d aitk.Dataset) dataset.Options {
	o := dataset.DefaultOptions()
	if p.Model != nil {
		o.Arch = p.Model.Arch
	}
	if v, ok := d.Extra["trim_auto_frame_count_tail"].(bool); ok {
		o.TrimAutoFrameCountTail = v
	}
	// The latent cache holds the VAE's output in its dtype: float32 doubles it.
	if p.Model != nil {
		dtype, _ := p.Model.Extra["vae_dtype"].(string)
		if dtype == "" {
			dtype, _ = p.Model.Extra["dtype"].(string)
		}
		switch strings.ToLower(dtype) {
		case "float32", "fp32", "float":
			o.LatentBytes = 4
		}
	}
	o.NumFrames = d.Frames()
	o.Resolutions = d.ResolutionValues()
	if d.ShrinkVideoToFrames != nil {
		o.ShrinkVideoToFrames = *d.ShrinkVideoToFrames
	}
	if d.AutoFrameCount != nil {
		o.AutoFrameCount = *d.AutoFrameCount
	}
	if d.FPS != nil {
		o.FPS = *d.FPS
	}
	if d.CaptionExt != "" {
		o.CaptionExt = d.CaptionExt
	}
	if d.DefaultCaption != nil {
		o.DefaultCaption = *d.DefaultCaption
	}
	o.TriggerWord = d.TriggerWord
	if o.TriggerWord == "" {
		o.TriggerWord = p.TriggerWord
	}
	if d.CacheLatentsToDisk != nil {
		o.CacheLatentsToDisk = *d.CacheLatentsToDisk
	}
	if d.NumRepeats != nil {
		o.NumRepeats = *d.NumRepeats
	}
	if t := p.Train; t != nil {
		if t.UnloadTextEncoder != nil {
			o.UnloadTextEncoder = *t.UnloadTextEncoder
		}
		if t.CacheTextEmbeddings != nil {
			o.CacheTextEmbeddings = *t.CacheTextEmbeddings
		}
		if t.Steps != nil {
			o.Steps = *t.Steps
		}
		if t.BatchSize != nil {
			o.BatchSize = *t.BatchSize
		}
		if t.GradientAccumulation != nil {
			o.GradAccum = *t.GradientAccumulation
		}
	}
	if d.BatchSize != nil {
		o.BatchSize = *d.BatchSize
	}
	if d.CacheTextEmbeddings != nil {
		o.CacheTextEmbeddings = *d.CacheTextEmbeddings
	}
	return o
}
