package library

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/daydreamlive/scopectl/internal/store"
)

// SampleExts are the kinds of file a sample can be: what ai-toolkit and Scope write to show
// a LoRA at work (images, short videos).
var SampleExts = []string{".jpg", ".jpeg", ".png", ".webp", ".gif", ".mp4", ".webm", ".mov"}

// IsSample reports whether name has a sample's extension.
func IsSample(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	for _, e := range SampleExts {
		if ext == e {
			return true
		}
	}
	return false
}

// SamplePath is where a sample with this sha256 and extension is kept.
func (l *Library) SamplePath(sha, ext string) string {
	return filepath.Join(l.BlobDir, "samples", sha[:2], sha+strings.ToLower(ext))
}

// AddSample stores the sample file at path under name (its file name when empty),
// records where it came from and, with loraRef, the library LoRA it shows. The same
// content twice is one sample.
func (l *Library) AddSample(ctx context.Context, path, name, loraRef, origin string) (store.Sample, error) {
	if name == "" {
		name = filepath.Base(path)
	}
	if !IsSample(name) {
		return store.Sample{}, fmt.Errorf("%s: not a sample (want one of %s)", name, strings.Join(SampleExts, " "))
	}
	if err := ValidName(strings.TrimSuffix(name, filepath.Ext(name))); err != nil {
		return store.Sample{}, err
	}
	var loraSHA string
	if loraRef != "" {
		lo, err := l.Store.GetLoRA(ctx, loraRef)
		if err != nil {
			return store.Sample{}, fmt.Errorf("sample %s for LoRA %q: %w", name, loraRef, err)
		}
		loraSHA = lo.SHA256
	}
	fi, err := os.Stat(path)
	if err != nil {
		return store.Sample{}, err
	}
	if !fi.Mode().IsRegular() {
		return store.Sample{}, fmt.Errorf("%s: not a regular file", path)
	}
	sha, err := l.hash(path, name, fi.Size())
	if err != nil {
		return store.Sample{}, err
	}
	dst := l.SamplePath(sha, filepath.Ext(name))
	if _, err := l.ingestTo(path, sha, dst, ingestOpts{src: fi}); err != nil {
		return store.Sample{}, err
	}
	sm := store.Sample{SHA256: sha, Name: name, Size: fi.Size(), Path: dst, LoRA: loraSHA, Origin: origin}
	if err := l.Store.PutSample(ctx, sm); err != nil {
		return store.Sample{}, err
	}
	return sm, nil
}
