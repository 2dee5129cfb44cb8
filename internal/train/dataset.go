package train

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/dataset/datasetlib"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
)

// datasetFile is one file of a dataset folder to send.
type datasetFile struct {
	Rel    string // slash-separated, relative to the folder
	Abs    string
	Size   int64
	SHA256 string
}

// scanDataset lists and hashes a dataset folder by dataset.ListFolder's rules (what
// ai-toolkit reads: media, their captions and sidecars, _controls; no hidden files, no
// caches). Its sha256 is the folder's manifest id (dataset.Manifest.SHA256): what
// `dataset add` gives the same bytes, so the same files give the same folder on the
// machine whether they come from a folder or from the library.
func scanDataset(ctx context.Context, dir string) ([]datasetFile, string, error) {
	f, m, err := dataset.FolderManifest(ctx, dir)
	if err != nil {
		return nil, "", err
	}
	return datasetFiles(f.Files), m.SHA256(), nil
}

func datasetFiles(fs []dataset.FolderFile) []datasetFile {
	out := make([]datasetFile, len(fs))
	for i, f := range fs {
		out[i] = datasetFile{Rel: f.Path, Abs: f.Abs, Size: f.Size, SHA256: f.SHA256}
	}
	return out
}

// DatasetSHA is the dataset hash a job records: the manifest id of its one dataset (a
// folder or a library dataset version), or for a job with several, the sha256 of their
// ids one per line in the order the config lists them.
func DatasetSHA(ids []string) string {
	if len(ids) == 1 {
		return ids[0]
	}
	h := sha256.New()
	for _, id := range ids {
		fmt.Fprintln(h, id)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sameDatasets refuses to continue job on datasets other than those it started with:
// their hash (DatasetSHA) must be the job's, or what an older scopectl recorded for the
// same ids (their sha256 one per line, for one dataset too).
func (t *Trainer) sameDatasets(ctx context.Context, srcs []datasetSource, job store.TrainJob) error {
	if job.DatasetSHA == "" {
		return nil
	}
	var ids []string
	for _, s := range srcs {
		_, id, err := t.datasetFilesOf(ctx, s)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	h := sha256.New()
	for _, id := range ids {
		fmt.Fprintln(h, id)
	}
	if got := DatasetSHA(ids); got != job.DatasetSHA && hex.EncodeToString(h.Sum(nil)) != job.DatasetSHA {
		return fmt.Errorf("%w: the dataset changed since job %s started (dataset hash %.12s, then %.12s); --force resumes with it anyway", ErrRefused, job.ID, got, job.DatasetSHA)
	}
	return nil
}

// datasetSource is where a config's dataset comes from: a folder here, or a version of
// a library dataset (`scopectl dataset add`).
type datasetSource struct {
	dir string // a folder (absolute)
	lib string // a library dataset, NAME@VERSION
}

func (s datasetSource) key() string {
	if s.lib != "" {
		return "dataset:" + s.lib
	}
	return s.dir
}

func (s datasetSource) String() string {
	if s.lib != "" {
		return "library dataset " + s.lib
	}
	return s.dir
}

// resolveDataset reads a folder_path: a folder (absolute, relative to the working
// directory, or to the config's folder) when one is there, else a library dataset
// (NAME or NAME@VERSION; a bare NAME is its newest version, pinned for this run).
func (t *Trainer) resolveDataset(ctx context.Context, folder, config string) (datasetSource, error) {
	dir := folder
	if !filepath.IsAbs(dir) {
		if _, err := os.Stat(dir); err != nil {
			dir = filepath.Join(filepath.Dir(config), dir)
		}
	}
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() || filepath.IsAbs(folder) || t.Lib == nil {
		abs, _ := filepath.Abs(dir)
		return datasetSource{dir: abs}, nil
	}
	ref, rerr := datasetlib.ParseRef(folder)
	if rerr != nil {
		return datasetSource{}, fmt.Errorf("%s: no such folder here (nor a library dataset name: %v)", folder, rerr)
	}
	dl, err := datasetlib.New(t.Lib)
	if err != nil {
		return datasetSource{}, err
	}
	d, _, err := dl.Get(ctx, ref.String())
	if errors.Is(err, store.ErrNotFound) {
		return datasetSource{}, fmt.Errorf("%s: no such folder here, nor a library dataset (`scopectl dataset ls`)", folder)
	}
	if err != nil {
		return datasetSource{}, err
	}
	return datasetSource{lib: fmt.Sprintf("%s@%d", d.Name, d.Version)}, nil
}

// checkDataset runs dataset check on a source with a config's options.
func (t *Trainer) checkDataset(ctx context.Context, src datasetSource, opts dataset.Options) (*dataset.Report, error) {
	if src.lib == "" {
		return dataset.Check(ctx, src.dir, opts)
	}
	dl, err := datasetlib.New(t.Lib)
	if err != nil {
		return nil, err
	}
	return dl.Check(ctx, src.lib, opts)
}

// datasetFilesOf lists a source's files to send (a library dataset's are read from its
// blobs) and its manifest id.
func (t *Trainer) datasetFilesOf(ctx context.Context, src datasetSource) ([]datasetFile, string, error) {
	if src.lib == "" {
		return scanDataset(ctx, src.dir)
	}
	dl, err := datasetlib.New(t.Lib)
	if err != nil {
		return nil, "", err
	}
	d, files, err := dl.Files(ctx, src.lib)
	if err != nil {
		return nil, "", err
	}
	return datasetFiles(files), d.ManifestSHA, nil
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
