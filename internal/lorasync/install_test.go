package lorasync_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/remote/file"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

func readOwned(t *testing.T, dir string) *library.Owned {
	t.Helper()
	o, err := library.ReadOwned(dir)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// oldInstall puts ref into dir as scopectl did before the folder's ownership record: the
// file, its lora_manifest.json entry, and a row in the library index only.
func oldInstall(t *testing.T, lib *library.Library, ref, dir string) *library.Prepared {
	t.Helper()
	pr, err := lib.Prepare(ctx, ref, library.InstallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := os.Open(pr.Path)
	out, _ := os.Create(filepath.Join(dir, pr.File))
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	in.Close()
	out.Close()
	err = scope.UpdateManifest(dir, func(m *scope.Manifest) error {
		m.Set(scope.ManifestEntry{Filename: pr.File, Provenance: library.Provenance(pr.Entry), SHA256: pr.SHA256, SizeBytes: pr.Size, AddedAt: time.Now().UTC()})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := lib.Store.PutInstall(ctx, store.Install{Dir: dir, File: pr.File, Name: pr.Entry.Name, SourceSHA256: pr.Entry.SHA256,
		SHA256: pr.SHA256, Size: pr.Size, Form: pr.Form}); err != nil {
		t.Fatal(err)
	}
	return pr
}

func rows(t *testing.T, lib *library.Library, dir string) int {
	t.Helper()
	in, err := lib.Store.ListInstalls(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(in)
}

// A folder installed by the old code (its ownership only in the library index) keeps
// working: install sees its files as scopectl's, uninstall and sync --delete remove them,
// a user's file is still never touched, and the first write moves the record into the
// folder (the index rows are dropped).
func TestFolderInstalledByOldCode(t *testing.T) {
	lib, _, _ := setup(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "theirs.safetensors"), []byte("user's own"), 0o644)
	oldInstall(t, lib, "toolkit", dir)
	oldInstall(t, lib, "diff", dir)
	oldInstall(t, lib, "kohya", dir)
	if _, err := os.Stat(filepath.Join(dir, lorasync.OwnedName)); !os.IsNotExist(err) {
		t.Fatal("old install wrote a folder record")
	}
	ins, err := lib.Installs(ctx)
	if err != nil || len(ins) != 3 || ins[1].Name != "kohya" || ins[1].Form != "as-is" {
		t.Fatalf("installs before migration: %+v %v", ins, err)
	}

	// Install of what is there: unchanged, owned, and the record moves into the folder.
	r, err := lorasync.Install(ctx, lib, "toolkit", library.InstallOptions{Dir: dir})
	if err != nil || r.Status != "unchanged" {
		t.Fatalf("%+v %v", r, err)
	}
	o := readOwned(t, dir)
	if len(o.Files) != 3 || o.Files["diff.safetensors"].Form != "diffusion_model" || o.Files["toolkit.safetensors"].Name != "toolkit" {
		t.Fatalf("record after migration: %+v", o.Files)
	}
	if n := rows(t, lib, dir); n != 0 {
		t.Fatalf("%d index rows left after migration", n)
	}
	if ins, _ := lib.Installs(ctx); len(ins) != 3 {
		t.Fatalf("installs after migration: %+v", ins)
	}

	// A second old folder: uninstall straight away (no install first).
	dir2 := t.TempDir()
	oldInstall(t, lib, "toolkit", dir2)
	oldInstall(t, lib, "kohya", dir2)
	scribbleAt(t, filepath.Join(dir2, "kohya.safetensors"))
	if _, err := lorasync.Uninstall(ctx, lib, "kohya", dir2, false); !errors.Is(err, library.ErrRefused) || !strings.Contains(err.Error(), "changed since") {
		t.Fatalf("changed file removed without --force: %v", err)
	}
	res, err := lorasync.Uninstall(ctx, lib, "toolkit", dir2, false)
	if err != nil || len(res) != 1 || res[0].Name != "toolkit" {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir2, "toolkit.safetensors")); !os.IsNotExist(err) {
		t.Fatal("file still there")
	}
	if m, err := scope.LoadManifest(dir2); err != nil {
		t.Fatal(err)
	} else if _, ok := m.Get("toolkit.safetensors"); ok {
		t.Fatal("manifest entry kept")
	}
	if o := readOwned(t, dir2); len(o.Files) != 1 || o.Files["kohya.safetensors"].Name != "kohya" || rows(t, lib, dir2) != 0 {
		t.Fatalf("record %+v, rows %d", o.Files, rows(t, lib, dir2))
	}

	// A third: sync --delete to the folder as a path removes the old installs not wanted,
	// never the user's file.
	dir3 := t.TempDir()
	os.WriteFile(filepath.Join(dir3, "theirs.safetensors"), []byte("user's own"), 0o644)
	oldInstall(t, lib, "toolkit", dir3)
	oldInstall(t, lib, "kohya", dir3)
	f3, _ := file.New(dir3)
	sres, err := lorasync.Sync(ctx, lib, f3, lorasync.Options{Names: []string{"kohya"}, Delete: true})
	if err != nil || ops(sres) != "skip:kohya.safetensors delete:toolkit.safetensors" {
		t.Fatalf("%v %s", err, ops(sres))
	}
	if _, err := os.Stat(filepath.Join(dir3, "theirs.safetensors")); err != nil {
		t.Fatal("removed the user's file")
	}
	if o := readOwned(t, dir3); len(o.Files) != 1 || rows(t, lib, dir3) != 0 {
		t.Fatalf("record %+v", o.Files)
	}
}

func scribbleAt(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	f.WriteAt([]byte("zzzz"), fi.Size()-8)
	f.Close()
}

// lora install is a sync to the local folder: a folder made by one is seen as its own by
// the other, with the same files, manifest and record.
func TestInstallIsASyncToTheFolder(t *testing.T) {
	lib, r, synced := setup(t)
	installed := t.TempDir()
	for _, n := range []string{"toolkit", "diff"} {
		if res, err := lorasync.Install(ctx, lib, n, library.InstallOptions{Dir: installed}); err != nil || res.Status != "installed" {
			t.Fatalf("%+v %v", res, err)
		}
	}
	if _, err := lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"toolkit", "diff"}}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"toolkit.safetensors", "diff.safetensors"} {
		a, _ := os.ReadFile(filepath.Join(installed, f))
		b, _ := os.ReadFile(filepath.Join(synced, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s differs between install and sync", f)
		}
	}
	oi, os_ := readOwned(t, installed), readOwned(t, synced)
	mi, _ := scope.LoadManifest(installed)
	ms, _ := scope.LoadManifest(synced)
	for f, a := range oi.Files {
		b := os_.Files[f]
		a.SyncedAt, b.SyncedAt = time.Time{}, time.Time{}
		if a != b || a.Form == "" {
			t.Fatalf("record of %s: install %+v, sync %+v", f, a, b)
		}
		ea, _ := mi.Get(f)
		eb, _ := ms.Get(f)
		if ea.SHA256 != eb.SHA256 || ea.SizeBytes != eb.SizeBytes || ea.Provenance.Source != eb.Provenance.Source {
			t.Fatalf("manifest of %s: %+v %+v", f, ea, eb)
		}
	}
	// Scope's manifest is written as Scope writes it (Encode: sorted, indented, newline).
	raw, _ := os.ReadFile(filepath.Join(installed, scope.ManifestName))
	if enc, err := mi.Encode(); err != nil || !bytes.Equal(raw, enc) {
		t.Fatalf("manifest bytes differ from their encoding:\n%s\n%s", raw, enc)
	}
	// Each path sees the other's files as its own.
	if res, err := lorasync.Install(ctx, lib, "diff", library.InstallOptions{Dir: synced}); err != nil || res.Status != "unchanged" {
		t.Fatalf("%+v %v", res, err)
	}
	if res, err := lorasync.Uninstall(ctx, lib, "toolkit", synced, false); err != nil || len(res) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	fi, _ := file.New(installed)
	res, err := lorasync.Sync(ctx, lib, fi, lorasync.Options{Names: []string{"toolkit"}, Delete: true})
	if err != nil || ops(res) != "skip:toolkit.safetensors delete:diff.safetensors" {
		t.Fatalf("%v %s", err, ops(res))
	}
	ins, err := lib.Installs(ctx)
	if err != nil || len(ins) != 2 || ins[0].Dir == ins[1].Dir {
		t.Fatalf("installs: %+v %v", ins, err)
	}
}

// A file with the wanted content that scopectl did not put there is left as the user's:
// install reports it unchanged but does not claim it (uninstall and --delete leave it);
// --force claims it. A file scopectl put there and the user changed since is removed by
// --delete only with --force.
func TestUserFilesStayTheUsers(t *testing.T) {
	lib, r, dir := setup(t)
	pr, err := lib.Prepare(ctx, "toolkit", library.InstallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(pr.Path)
	os.WriteFile(filepath.Join(dir, pr.File), b, 0o644)
	res, err := lorasync.Install(ctx, lib, "toolkit", library.InstallOptions{Dir: dir})
	if err != nil || res.Status != "unchanged" {
		t.Fatalf("%+v %v", res, err)
	}
	if _, ok := readOwned(t, dir).Files[pr.File]; ok {
		t.Fatal("claimed a file scopectl did not put there")
	}
	if _, err := lorasync.Uninstall(ctx, lib, "toolkit", dir, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("uninstall of the user's file: %v", err)
	}
	if _, err := lorasync.Install(ctx, lib, "toolkit", library.InstallOptions{Dir: dir, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := readOwned(t, dir).Files[pr.File]; !ok {
		t.Fatal("--force did not claim the file")
	}

	if _, err := lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"kohya"}}); err != nil {
		t.Fatal(err)
	}
	scribbleAt(t, filepath.Join(dir, "kohya.safetensors"))
	if _, err := lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"toolkit"}, Delete: true}); !errors.Is(err, library.ErrRefused) {
		t.Fatalf("--delete removed a changed file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "kohya.safetensors")); err != nil {
		t.Fatal(err)
	}
	if res, err := lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"toolkit"}, Delete: true, Force: true}); err != nil || !strings.Contains(ops(res), "delete:kohya") {
		t.Fatalf("%v", err)
	}
}

// Installs running at once into one folder each keep their file in the folder's record
// and in Scope's manifest (the records are rewritten under the manifest lock).
func TestConcurrentInstallsMerge(t *testing.T) {
	lib, _, dir := setup(t)
	names := []string{"toolkit", "kohya", "diff"}
	errs := make(chan error, len(names))
	for _, n := range names {
		go func() {
			_, err := lorasync.Install(ctx, lib, n, library.InstallOptions{Dir: dir})
			errs <- err
		}()
	}
	for range names {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	m, err := scope.LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	o := readOwned(t, dir)
	for _, n := range names {
		if _, ok := o.Files[n+".safetensors"]; !ok {
			t.Errorf("%s missing from the record: %+v", n, o.Files)
		}
		if _, ok := m.Get(n + ".safetensors"); !ok {
			t.Errorf("%s missing from the manifest", n)
		}
	}
}
