package train

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/dataset/datasetlib"
	"github.com/daydreamlive/scopectl/internal/dataset/mediatest"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/store"
)

// The dataset hash train run records for a folder is the id `dataset add` gives the same
// bytes, and a config naming the library dataset sends the same files under the same id.
func TestDatasetSHAMatchesLibrary(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"a.mp4": mediatest.MP4{Width: 832, Height: 480, Frames: 81}.Bytes(), "a.txt": []byte("p3r5on walks"),
		"sub/b.png": mediatest.PNG(64, 48), "sub/b.txt": []byte("a still"), ".aitk_size.json": []byte("{}"),
		"_latent_cache/a.safetensors": []byte("cache"), "notes.md": []byte("not read"),
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, sum, err := scanDataset(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 {
		t.Fatalf("sent files %+v", files)
	}
	lib, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	dl, _ := datasetlib.New(lib)
	res, err := dl.Add(ctx, datasetlib.AddInput{Dir: dir, Name: "walk"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Dataset.ManifestSHA != sum || DatasetSHA([]string{sum}) != sum {
		t.Fatalf("train records %s, dataset add gives %s", sum, res.Dataset.ManifestSHA)
	}
	tr := &Trainer{Lib: lib}
	cfg := filepath.Join(t.TempDir(), "job.yaml")
	for _, ref := range []string{"walk", "walk@1"} {
		src, err := tr.resolveDataset(ctx, ref, cfg)
		if err != nil || src.lib != "walk@1" {
			t.Fatalf("%s: %+v %v", ref, src, err)
		}
		lfiles, lsum, err := tr.datasetFilesOf(ctx, src)
		if err != nil || lsum != sum || len(lfiles) != len(files) {
			t.Fatalf("%s: %d files, id %s (%v)", ref, len(lfiles), lsum, err)
		}
		for i, f := range lfiles {
			if f.Rel != files[i].Rel || f.SHA256 != files[i].SHA256 || f.Abs != lib.BlobPath(f.SHA256) {
				t.Fatalf("%+v vs %+v", f, files[i])
			}
		}
		rep, err := tr.checkDataset(ctx, src, DatasetOptions(&aitk.Process{Model: &aitk.Model{Arch: "wan21"}}, aitk.Dataset{NumFrames: aitk.Ptr(81)}))
		if err != nil || rep.Dir != "walk@1" || rep.Totals.Videos != 1 || rep.Totals.Images != 1 {
			t.Fatalf("check: %+v %v", rep, err)
		}
	}
	// a folder wins over a dataset of the same name; neither is one line naming it
	if src, err := tr.resolveDataset(ctx, dir, cfg); err != nil || src.dir != dir {
		t.Fatalf("%+v %v", src, err)
	}
	if _, err := tr.resolveDataset(ctx, "nope", cfg); err == nil || !strings.Contains(err.Error(), "nor a library dataset") {
		t.Fatalf("unknown: %v", err)
	}
	// a job moved to another machine continues on the datasets it started with only
	folderSrc := datasetSource{dir: dir}
	libSrc := datasetSource{lib: "walk@1"}
	legacy := sha256.Sum256([]byte(sum + "\n"))
	for _, rec := range []string{sum, hex.EncodeToString(legacy[:]), ""} {
		if err := tr.sameDatasets(ctx, []datasetSource{libSrc}, store.TrainJob{ID: "j", DatasetSHA: rec}); err != nil {
			t.Errorf("recorded %q: %v", rec, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("p3r5on runs"), 0o644)
	if err := tr.sameDatasets(ctx, []datasetSource{folderSrc}, store.TrainJob{ID: "j", DatasetSHA: sum}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "dataset changed since job j started") {
		t.Errorf("changed folder: %v", err)
	}
	// several datasets: one hash over their ids
	if DatasetSHA([]string{sum, sum}) == sum {
		t.Fatal("two datasets recorded as one")
	}
}
