package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/dataset/datasetlib"
	"github.com/daydreamlive/scopectl/internal/dataset/mediatest"
)

func dsWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	os.Chtimes(p, old, old)
}

// dataset add / ls / show / export / rm and train init --dataset NAME, through the CLI.
func TestDatasetLibraryCLI(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.root, "walk")
	dsWrite(t, filepath.Join(src, "a.mp4"), mediatest.MP4{Width: 832, Height: 480, Frames: 81}.Bytes())
	dsWrite(t, filepath.Join(src, "a.txt"), []byte("p3r5on walks"))
	dsWrite(t, filepath.Join(src, "b.mp4"), mediatest.MP4{Width: 832, Height: 480, Frames: 49}.Bytes())
	dsWrite(t, filepath.Join(src, "b.txt"), []byte("p3r5on turns"))
	dsWrite(t, filepath.Join(src, ".DS_Store"), []byte("junk"))

	// added: the short clip is a warning (printed), not a refusal
	out, errs, code := e.run("dataset", "add", src, "--name", "walk")
	if code != 0 || !strings.Contains(out, "added walk version 1") || !strings.Contains(out, "4 blob(s) stored") ||
		!strings.Contains(out, "not stored: .DS_Store") || !strings.Contains(errs, "scopectl: warning: b.mp4: frames_repeated") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	// again: nothing copied, says so
	out, _, code = e.run("--json", "dataset", "add", src, "--name", "walk")
	r := decode[datasetlib.AddResult](t, out)
	if code != 0 || r.Status != "unchanged" || r.Stored != 0 || r.Dataset.Version != 1 {
		t.Fatalf("exit %d %+v", code, r)
	}
	id := r.Dataset.ManifestSHA
	// a changed caption: version 2, one blob
	dsWrite(t, filepath.Join(src, "b.txt"), []byte("p3r5on turns around"))
	if out := e.mustRun("dataset", "add", src, "--name", "walk"); !strings.Contains(out, "added walk version 2") || !strings.Contains(out, "1 blob(s) stored") {
		t.Fatal(out)
	}
	ls := decode[[]datasetlib.Entry](t, e.mustRun("dataset", "ls", "--json"))
	if len(ls) != 1 || ls[0].Versions != 2 || ls[0].Version != 2 || ls[0].Files != 4 || ls[0].Items != 2 {
		t.Fatalf("%+v", ls)
	}
	if out := e.mustRun("dataset", "ls"); !strings.Contains(out, "walk") || !strings.Contains(out, "VERSION") {
		t.Fatal(out)
	}
	sh := decode[datasetlib.ShowResult](t, e.mustRun("dataset", "show", "walk@1", "--json"))
	if sh.Version != 1 || len(sh.Versions) != 2 || sh.Versions[0].ManifestSHA != id || len(sh.Files) != 4 || sh.Check == nil || sh.Check.Videos != 2 {
		t.Fatalf("%+v", sh)
	}
	if out := e.mustRun("dataset", "show", "walk"); !strings.Contains(out, "version 2") || !strings.Contains(out, "files of version 2") {
		t.Fatal(out)
	}
	// dataset check reads a library dataset by name
	if out, _, code := e.run("dataset", "check", "walk@1", "--num-frames", "81"); code != 1 || !strings.Contains(out, "walk@1: video dataset") || !strings.Contains(out, "frames_repeated") {
		t.Fatalf("check of a library dataset: %d\n%s", code, out)
	}
	if _, _, code := e.run("dataset", "show", "nope"); code != 4 {
		t.Fatalf("show of an unknown dataset: %d", code)
	}

	// export: the same bytes, version 1's caption
	exp := filepath.Join(e.root, "exported")
	if out := e.mustRun("dataset", "export", "walk@1", exp); !strings.Contains(out, "sha256-verified") {
		t.Fatal(out)
	}
	for _, n := range []string{"a.mp4", "a.txt", "b.mp4"} {
		a, _ := os.ReadFile(filepath.Join(src, n))
		b, err := os.ReadFile(filepath.Join(exp, n))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs after export (%v)", n, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(exp, "b.txt")); string(b) != "p3r5on turns" {
		t.Errorf("version 1 exported %q", b)
	}
	if _, err := os.Stat(filepath.Join(exp, ".DS_Store")); err == nil {
		t.Error("a hidden file was stored")
	}
	if _, _, code := e.run("dataset", "export", "walk", exp); code != 3 {
		t.Fatalf("export over a folder: %d", code)
	}

	// train init --dataset NAME: the config names the pinned version
	out = e.mustRun("train", "init", "--base", "wan2.1-t2v-1.3b", "--dataset", "walk", "-o", "job.yaml")
	if !strings.Contains(out, "library dataset walk@2") {
		t.Fatal(out)
	}
	cfg := trainRead(t, "job.yaml")
	if !strings.Contains(cfg, "folder_path: walk@2") || !strings.Contains(cfg, "name: walk") {
		t.Fatalf("config:\n%s", cfg)
	}
	e.mustRun("train", "init", "--base", "wan2.1-t2v-1.3b", "--dataset", "walk@1", "-o", "job1.yaml")
	if !strings.Contains(trainRead(t, "job1.yaml"), "folder_path: walk@1") {
		t.Fatal(trainRead(t, "job1.yaml"))
	}
	// a name that is no dataset stays a folder path, as before
	e.mustRun("train", "init", "--base", "wan2.1-t2v-1.3b", "--dataset", "/data/other", "-o", "job2.yaml")
	if !strings.Contains(trainRead(t, "job2.yaml"), "folder_path: /data/other") {
		t.Fatal(trainRead(t, "job2.yaml"))
	}

	// a broken folder is refused (exit 3) with its errors; --force adds it
	broken := filepath.Join(e.root, "broken")
	dsWrite(t, filepath.Join(broken, "a.mp4"), mediatest.MP4{Width: 832, Height: 480, Frames: 81}.Bytes())
	dsWrite(t, filepath.Join(broken, "empty.mp4"), nil)
	_, errs, code = e.run("dataset", "add", broken, "--name", "broken")
	if code != 3 || !strings.Contains(errs, "empty.mp4: empty_file") || !strings.Contains(errs, "--force") {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	if _, _, code := e.run("dataset", "show", "broken"); code != 4 {
		t.Fatalf("a refused dataset is listed: %d", code)
	}
	e.mustRun("dataset", "add", broken, "--name", "broken", "--force")
	if _, _, code := e.run("dataset", "add", broken, "--name", "a@b"); code != 2 {
		t.Fatalf("bad name: %d", code)
	}
	if _, _, code := e.run("dataset", "add", broken); code != 2 {
		t.Fatalf("no name: %d", code)
	}

	// rm: broken shares a.mp4 with walk, which keeps it
	rm := decode[[]datasetlib.RemoveResult](t, e.mustRun("dataset", "rm", "broken", "--json"))
	if len(rm) != 1 || rm[0].BlobsRemoved != 1 || rm[0].BlobsKept != 1 {
		t.Fatalf("%+v", rm)
	}
	e.mustRun("dataset", "export", "walk", filepath.Join(e.root, "again"))
	if out := e.mustRun("dataset", "rm", "walk"); !strings.Contains(out, "removed walk (2 version(s)): 5 file(s) deleted") {
		t.Fatal(out)
	}
	if out := e.mustRun("dataset", "ls"); !strings.Contains(out, "no datasets") {
		t.Fatal(out)
	}
}
