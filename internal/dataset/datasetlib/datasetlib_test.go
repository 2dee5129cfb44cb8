package datasetlib_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/dataset/datasetlib"
	"github.com/daydreamlive/scopectl/internal/dataset/mediatest"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

func open(t *testing.T) *datasetlib.Lib {
	t.Helper()
	lib, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	dl, err := datasetlib.New(lib)
	if err != nil {
		t.Fatal(err)
	}
	return dl
}

func write(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// folder writes a small video dataset with what ai-toolkit reads and what it does not.
func folder(t *testing.T, seed int) string {
	t.Helper()
	dir := t.TempDir()
	for i, frames := range []int{81, 81 + 4*seed} {
		base := filepath.Join(dir, "clips", []string{"a", "b"}[i])
		write(t, base+".mp4", mediatest.MP4{Width: 832, Height: 480, Frames: frames, Delta: 1000}.Bytes())
		write(t, base+".txt", []byte("p3r5on walks, take "+string(rune('0'+i))))
	}
	write(t, filepath.Join(dir, "still.png"), mediatest.PNG(64, 48))
	write(t, filepath.Join(dir, "still.txt"), []byte("a still"))
	write(t, filepath.Join(dir, "_controls", "still.png"), mediatest.PNG(64, 48))
	// not stored
	write(t, filepath.Join(dir, ".hidden.mp4"), []byte("x"))
	write(t, filepath.Join(dir, ".thumbs", "a.jpg"), []byte("x"))
	write(t, filepath.Join(dir, "_latent_cache", "a_x.safetensors"), []byte("cache"))
	write(t, filepath.Join(dir, "README.md"), []byte("notes"))
	write(t, filepath.Join(dir, "orphan.txt"), []byte("no media"))
	outside := filepath.Join(t.TempDir(), "outside.jpg")
	write(t, outside, mediatest.PNG(8, 8))
	if err := os.Symlink(outside, filepath.Join(dir, "escape.jpg")); err != nil {
		t.Fatal(err)
	}
	// kept: a symlink to a file inside the folder is read through
	if err := os.Symlink(filepath.Join("clips", "a.mp4"), filepath.Join(dir, "alias.mp4")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "alias.txt"), []byte("the same clip"))
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			past(t, p)
		}
		return nil
	})
	return dir
}

// past dates a file an hour back: a file modified just before it is read is read again
// next time (its recorded sha256 is not trusted), as git does.
func past(t *testing.T, p string) {
	t.Helper()
	at := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
}

func brief(r *datasetlib.AddResult) string {
	if r == nil {
		return "<nil>"
	}
	d := r.Dataset
	return fmt.Sprintf("status %s v%d (prev %d) files %d items %d bytes %d; stored %d existing %d hashed %d; check %+v",
		r.Status, d.Version, r.Previous, d.Files, d.Items, d.Bytes, r.Stored, r.Existing, r.Hashed, r.Check)
}

var wantKept = []string{"_controls/still.png", "alias.mp4", "alias.txt", "clips/a.mp4", "clips/a.txt", "clips/b.mp4", "clips/b.txt", "still.png", "still.txt"}

func TestAddExportRoundtrip(t *testing.T) {
	dl := open(t)
	ctx := context.Background()
	src := folder(t, 1)
	res, err := dl.Add(ctx, datasetlib.AddInput{Dir: src, Name: "walk"})
	if err != nil {
		t.Fatal(err)
	}
	d := res.Dataset
	if res.Status != "added" || d.Version != 1 || d.Files != len(wantKept) || d.Items != 4 || res.Stored != 7 || res.Existing != 0 {
		// 9 files, 7 distinct contents (alias.mp4 is clips/a.mp4, _controls/still.png is
		// still.png); items: 3 clips and one image
		t.Fatalf("%s", brief(res))
	}
	if res.Check.Videos != 3 || res.Check.NumFrames != 81 || res.Check.Errors != 0 {
		t.Fatalf("check %+v", res.Check)
	}
	var skipped []string
	for _, s := range res.Skipped {
		skipped = append(skipped, s.Path+" "+s.Reason)
	}
	for _, want := range []string{".hidden.mp4 hidden", ".thumbs/ hidden", "_latent_cache/ ai-toolkit's own cache", "README.md ai-toolkit reads", "orphan.txt caption without media", "escape.jpg symlink to a file outside"} {
		if !strings.Contains(strings.Join(skipped, "\n"), want) {
			t.Errorf("not skipped: %s\n%s", want, strings.Join(skipped, "\n"))
		}
	}
	// the id is the manifest's sha256, and the folder's own manifest gives the same
	_, m, err := dataset.FolderManifest(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if m.SHA256() != d.ManifestSHA {
		t.Fatalf("folder manifest %s, stored %s", m.SHA256(), d.ManifestSHA)
	}

	out := filepath.Join(t.TempDir(), "export")
	ex, err := dl.Export(ctx, "walk", out)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Files != len(wantKept) || ex.Dir != out {
		t.Fatalf("%+v", ex)
	}
	var got []string
	filepath.WalkDir(out, func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			rel, _ := filepath.Rel(out, p)
			got = append(got, filepath.ToSlash(rel))
			a, _ := os.ReadFile(p)
			b, err := os.ReadFile(filepath.Join(src, rel))
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s: exported bytes differ from the source (%v)", rel, err)
			}
		}
		return nil
	})
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(wantKept, " ") {
		t.Fatalf("exported %v, want %v", got, wantKept)
	}
	// the exported folder is the same dataset
	_, m2, err := dataset.FolderManifest(ctx, out)
	if err != nil || m2.SHA256() != d.ManifestSHA {
		t.Fatalf("exported folder's id %s (%v), want %s", m2.SHA256(), err, d.ManifestSHA)
	}
	// nothing left beside it, and an existing folder is refused
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Errorf("left beside the export: %v", ents)
	}
	if _, err := dl.Export(ctx, "walk", out); err == nil {
		t.Fatal("export over an existing folder")
	}

	// a damaged blob: export fails, and leaves no folder
	f := filepath.Join(filepath.Dir(dl.Lib.BlobDir), "blobs")
	_ = f
	blob := dl.Lib.BlobPath(m.Files[0].SHA256)
	os.Chmod(blob, 0o644)
	write(t, blob, bytes.Repeat([]byte{'z'}, int(m.Files[0].Size)))
	out2 := filepath.Join(t.TempDir(), "export2")
	if _, err := dl.Export(ctx, "walk@1", out2); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("export of a damaged blob: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out2)); len(ents) != 0 {
		t.Fatalf("a failed export left %v", ents)
	}
}

func TestVersionsDedupe(t *testing.T) {
	dl := open(t)
	ctx := context.Background()
	src := folder(t, 1)
	r1, err := dl.Add(ctx, datasetlib.AddInput{Dir: src, Name: "walk"})
	if err != nil {
		t.Fatal(err)
	}
	// the same files: nothing copied, nothing read again (their sha256s are recorded)
	r2, err := dl.Add(ctx, datasetlib.AddInput{Dir: src, Name: "walk"})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Status != "unchanged" || r2.Dataset.Version != 1 || r2.Stored != 0 || r2.Hashed != 0 {
		t.Fatalf("unchanged add: %s", brief(r2))
	}
	// one caption changed: version 2, one blob stored
	write(t, filepath.Join(src, "clips", "a.txt"), []byte("p3r5on runs"))
	past(t, filepath.Join(src, "clips", "a.txt"))
	r3, err := dl.Add(ctx, datasetlib.AddInput{Dir: src, Name: "walk"})
	if err != nil {
		t.Fatal(err)
	}
	if r3.Status != "added" || r3.Dataset.Version != 2 || r3.Previous != 1 || r3.Stored != 1 || r3.Existing != 6 || r3.Hashed != 1 {
		t.Fatalf("changed add: %s", brief(r3))
	}
	if r3.Dataset.ManifestSHA == r1.Dataset.ManifestSHA {
		t.Fatal("same id for different files")
	}
	// another dataset with a file in common shares its blob
	other := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(src, "clips", "b.mp4"))
	write(t, filepath.Join(other, "b.mp4"), b)
	r4, err := dl.Add(ctx, datasetlib.AddInput{Dir: other, Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if r4.Stored != 0 || r4.Existing != 1 {
		t.Fatalf("shared file stored again: %s", brief(r4))
	}
	ls, err := dl.List(ctx)
	if err != nil || len(ls) != 2 || ls[1].Name != "walk" || ls[1].Versions != 2 || ls[1].Version != 2 {
		t.Fatalf("list %+v %v", ls, err)
	}
	sh, err := dl.Show(ctx, "walk@1")
	if err != nil || len(sh.Versions) != 2 || sh.Version != 1 || len(sh.Files) != len(wantKept) || sh.Check == nil {
		t.Fatalf("show %+v %v", sh, err)
	}
	if _, err := dl.Show(ctx, "walk@3"); err == nil {
		t.Fatal("show of a version that does not exist")
	}
}

func TestRemoveKeepsShared(t *testing.T) {
	dl := open(t)
	ctx := context.Background()
	// dataset A: a clip, its caption, and a LoRA named after the clip (a sidecar)
	a := t.TempDir()
	clip := mediatest.MP4{Width: 832, Height: 480, Frames: 81}.Bytes()
	write(t, filepath.Join(a, "c.mp4"), clip)
	write(t, filepath.Join(a, "c.txt"), []byte("only in A"))
	if err := loratest.Write(filepath.Join(a, "c.safetensors"), loratest.Spec{Base: lora.BaseT2V1_3B}); err != nil {
		t.Fatal(err)
	}
	// dataset B: the same clip
	b := t.TempDir()
	write(t, filepath.Join(b, "c.mp4"), clip)
	write(t, filepath.Join(b, "c.txt"), []byte("only in B"))
	ra, err := dl.Add(ctx, datasetlib.AddInput{Dir: a, Name: "A"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dl.Add(ctx, datasetlib.AddInput{Dir: b, Name: "B"}); err != nil {
		t.Fatal(err)
	}
	// the LoRA enters the library too: the same blob
	lr, err := dl.Lib.Add(ctx, filepath.Join(a, "c.safetensors"), library.AddOptions{Name: "c"})
	if err != nil || lr.Method != "none" && lr.LoRA.Path != dl.Lib.BlobPath(lr.LoRA.SHA256) {
		t.Fatalf("%+v %v", lr, err)
	}
	_, m, _ := dl.Get(ctx, "A")
	blobOf := map[string]string{}
	for _, f := range m.Files {
		blobOf[f.Path] = dl.Lib.BlobPath(f.SHA256)
	}
	rm, err := dl.Remove(ctx, "A")
	if err != nil {
		t.Fatal(err)
	}
	if len(rm.Removed) != 1 || rm.Removed[0].ManifestSHA != ra.Dataset.ManifestSHA || rm.BlobsRemoved != 1 || rm.BlobsKept != 2 {
		t.Fatalf("%+v", rm)
	}
	for p, blob := range blobOf {
		_, err := os.Stat(blob)
		if gone := errors.Is(err, os.ErrNotExist); gone != (p == "c.txt") {
			t.Errorf("%s: blob gone %v, want gone only for A's own caption", p, gone)
		}
	}
	// the LoRA goes; B still uses nothing of it, so its blob goes with it
	if _, err := dl.Lib.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(blobOf["c.safetensors"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoRA blob kept after its last user went: %v", err)
	}
	// a LoRA whose bytes a dataset holds keeps its blob when the LoRA is removed
	cdir := t.TempDir()
	if err := loratest.Write(filepath.Join(cdir, "d.safetensors"), loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(cdir, "d.mp4"), clip)
	if _, err := dl.Lib.Add(ctx, filepath.Join(cdir, "d.safetensors"), library.AddOptions{Name: "d"}); err != nil {
		t.Fatal(err)
	}
	if _, err := dl.Add(ctx, datasetlib.AddInput{Dir: cdir, Name: "D", Force: true}); err != nil {
		t.Fatal(err)
	}
	e, err := dl.Lib.Remove(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.Path); err != nil {
		t.Fatalf("lora rm removed a blob dataset D uses: %v", err)
	}
	if _, err := dl.Export(ctx, "D", filepath.Join(t.TempDir(), "d")); err != nil {
		t.Fatal(err)
	}
	// two names for the same files: removing one deletes nothing
	if _, err := dl.Add(ctx, datasetlib.AddInput{Dir: cdir, Name: "D2", Force: true}); err != nil {
		t.Fatal(err)
	}
	if rm, err := dl.Remove(ctx, "D2"); err != nil || rm.BlobsRemoved != 0 || rm.BlobsKept != 2 {
		t.Fatalf("%+v %v", rm, err)
	}
	if _, err := dl.Export(ctx, "D", filepath.Join(t.TempDir(), "d")); err != nil {
		t.Fatal(err)
	}
	if _, err := dl.Remove(ctx, "nope"); err == nil {
		t.Fatal("rm of an unknown dataset")
	}
}

func TestRefusesBrokenDataset(t *testing.T) {
	dl := open(t)
	ctx := context.Background()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ok.mp4"), mediatest.MP4{Width: 832, Height: 480, Frames: 81}.Bytes())
	write(t, filepath.Join(dir, "ok.txt"), []byte("fine"))
	write(t, filepath.Join(dir, "empty.mp4"), nil)
	write(t, filepath.Join(dir, "bad.mp4"), []byte("not a video at all"))
	res, err := dl.Add(ctx, datasetlib.AddInput{Dir: dir, Name: "broken"})
	if !errors.Is(err, datasetlib.ErrRefused) || res == nil || res.Status != "refused" || res.Check.Errors < 1 {
		t.Fatalf("%s %v", brief(res), err)
	}
	if ls, _ := dl.List(ctx); len(ls) != 0 {
		t.Fatalf("refused dataset listed: %+v", ls)
	}
	res, err = dl.Add(ctx, datasetlib.AddInput{Dir: dir, Name: "broken", Force: true})
	if err != nil || res.Status != "added" || !res.Check.Forced {
		t.Fatalf("--force: %s %v", brief(res), err)
	}
	// bad names and refs
	for _, n := range []string{"", "a/b", ".x", "a@b"} {
		if _, err := dl.Add(ctx, datasetlib.AddInput{Dir: dir, Name: n, Force: true}); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	for _, r := range []string{"broken@0", "broken@x", "broken@-1"} {
		if _, _, err := dl.Get(ctx, r); err == nil {
			t.Errorf("ref %q accepted", r)
		}
	}
	// a folder with nothing ai-toolkit reads
	empty := t.TempDir()
	write(t, filepath.Join(empty, "notes.md"), []byte("x"))
	if _, err := dl.Add(ctx, datasetlib.AddInput{Dir: empty, Name: "empty", Force: true}); err == nil || !strings.Contains(err.Error(), "no media") {
		t.Fatalf("empty folder: %v", err)
	}
}

// An add stopped after some blobs were stored leaves no dataset, and the next add copies
// only the rest.
func TestInterruptedAddResumes(t *testing.T) {
	dl := open(t)
	src := folder(t, 2)
	f, m, err := dataset.FolderManifest(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	// as if the add was killed after storing two blobs
	for _, ff := range f.Files[:2] {
		fi, _ := os.Stat(ff.Abs)
		if _, err := dl.Lib.StoreBlob(context.Background(), ff.Abs, ff.SHA256, fi); err != nil {
			t.Fatal(err)
		}
	}
	// and one cancelled mid-way
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := dl.Add(ctx, datasetlib.AddInput{Dir: src, Name: "walk"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled add: %v", err)
	}
	if ls, _ := dl.List(context.Background()); len(ls) != 0 {
		t.Fatalf("an interrupted add is visible: %+v", ls)
	}
	res, err := dl.Add(context.Background(), datasetlib.AddInput{Dir: src, Name: "walk"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Existing != 2 || res.Stored != 5 || res.Dataset.ManifestSHA != m.SHA256() {
		t.Fatalf("resumed add: %s", brief(res))
	}
}
