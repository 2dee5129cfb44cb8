package library_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/store"
)

// editInPlace overwrites a few bytes of p's tensor data without replacing the file (what
// an editor or a training run writing to the same path does).
func editInPlace(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if _, err := f.WriteAt([]byte{0x5a, 0xa5, 0x5a, 0xa5}, fi.Size()-8); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func sameInode(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// By default the library owns its bytes: editing the original afterwards leaves the entry
// intact, and installs still work.
func TestAddOwnsItsBytes(t *testing.T) {
	l := open(t)
	p := gen(t, t.TempDir(), "slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	r, err := l.Add(ctx, p, library.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if (r.Method != "copy" && r.Method != "reflink") || sameInode(p, r.LoRA.Path) {
		t.Fatalf("method %s, blob shares the original's inode: %v", r.Method, sameInode(p, r.LoRA.Path))
	}
	editInPlace(t, p)
	if err := l.Check(ctx, r.LoRA); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Verify(ctx, nil); err != nil || res[0].Status != "ok" || res[0].Fix != "" {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := lorasync.Install(ctx, l, "slime", library.InstallOptions{Dir: t.TempDir(), Pipeline: "longlive"}); err != nil {
		t.Fatal(err)
	}
}

// --link shares the original's inode; editing the original then damages the entry, and
// every way of reading it (check, verify, install) names the entry and the fix; adding the
// original content again restores it.
func TestLinkedEntryDamageNamesTheFix(t *testing.T) {
	l := open(t)
	src := t.TempDir()
	p := gen(t, src, "slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	orig, _ := os.ReadFile(p)
	r, err := l.Add(ctx, p, library.AddOptions{Link: true})
	if err != nil || r.Method != "hardlink" || !sameInode(p, r.LoRA.Path) {
		t.Fatalf("%+v %v", r, err)
	}
	editInPlace(t, p)

	err = l.Check(ctx, r.LoRA)
	var dmg *library.DamagedError
	if !errors.As(err, &dmg) || !errors.Is(err, library.ErrDamaged) || dmg.Name != "slime" {
		t.Fatalf("check: %v", err)
	}
	for _, want := range []string{`"slime"`, r.LoRA.Path, "was changed", "`scopectl lora add`", "`scopectl lora rm slime`", p} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check error lacks %q: %v", want, err)
		}
	}
	_, err = lorasync.Install(ctx, l, "slime", library.InstallOptions{Dir: t.TempDir(), Pipeline: "longlive"})
	if !errors.Is(err, library.ErrDamaged) || !strings.Contains(err.Error(), "lora rm slime") {
		t.Fatalf("install: %v", err)
	}
	res, err := l.Verify(ctx, nil)
	if err != nil || res[0].Status != "corrupt" || !strings.Contains(res[0].Fix, "lora add") || !strings.Contains(res[0].Fix, "lora rm slime") {
		t.Fatalf("verify: %+v %v", res, err)
	}
	// Adding the edited file as "slime" is refused with the way out.
	if _, err := l.Add(ctx, p, library.AddOptions{}); err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "lora rm slime") {
		t.Fatalf("add of the edited file: %v", err)
	}
	// The original content, from anywhere, restores the entry as the library's own copy.
	back := filepath.Join(t.TempDir(), "redownloaded.safetensors")
	os.WriteFile(back, orig, 0o644)
	rr, err := l.Add(ctx, back, library.AddOptions{})
	if err != nil || rr.Status != "restored" || sameInode(back, rr.LoRA.Path) || sameInode(p, rr.LoRA.Path) {
		t.Fatalf("restore: %+v %v", rr, err)
	}
	if err := l.Check(ctx, rr.LoRA); err != nil {
		t.Fatal(err)
	}
	if res, _ := l.Verify(ctx, nil); res[0].Status != "ok" {
		t.Fatalf("after restore: %+v", res)
	}
}

// A blob an older scopectl hardlinked: verify says so, and adding the file again gives the
// library its own copy. A missing blob is reported with the fix as well.
func TestOldHardlinkBecomesOwnCopy(t *testing.T) {
	l := open(t)
	p := gen(t, t.TempDir(), "a.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	r, err := l.Add(ctx, p, library.AddOptions{Link: true})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := l.Verify(ctx, nil); res[0].Status != "ok" || !strings.Contains(res[0].Detail, "hardlink") || !strings.Contains(res[0].Fix, "lora add") {
		t.Fatalf("%+v", res)
	}
	r2, err := l.Add(ctx, p, library.AddOptions{})
	if err != nil || r2.Status != "exists" || sameInode(p, r.LoRA.Path) || !strings.Contains(r2.Note, "own copy") {
		t.Fatalf("%+v %v", r2, err)
	}
	if res, _ := l.Verify(ctx, nil); res[0].Status != "ok" || res[0].Fix != "" {
		t.Fatalf("%+v", res)
	}
	os.Remove(r.LoRA.Path)
	if res, _ := l.Verify(ctx, nil); res[0].Status != "missing" || !strings.Contains(res[0].Fix, "lora rm a") {
		t.Fatalf("%+v", res)
	}
}

// ago sets p's mtime into the past, as if it had been written an hour ago.
func ago(t *testing.T, paths ...string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	for _, p := range paths {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func statuses(sr *library.ScanResult) map[string]string {
	m := map[string]string{}
	for _, f := range sr.Files {
		m[filepath.Base(f.Path)] = f.Status
	}
	return m
}

// Scan of Scope's dir after install: the files scopectl installed (converted or as-is)
// are recognised, not indexed again or refused for their name; a second scan reads nothing.
func TestScanRecognisesInstallsAndSkipsUnchanged(t *testing.T) {
	l := open(t)
	scopeDir := t.TempDir()
	src := t.TempDir()
	diff := gen(t, src, "slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Diffusers})
	comfy := gen(t, src, "plain.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 4})
	for _, p := range []string{diff, comfy} {
		if _, err := l.Add(ctx, p, library.AddOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := lorasync.Install(ctx, l, lora.DisplayName(p), library.InstallOptions{Dir: scopeDir, Pipeline: "longlive"}); err != nil {
			t.Fatal(err)
		}
	}
	theirs := gen(t, scopeDir, "theirs.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 7})
	ago(t, filepath.Join(scopeDir, "slime.safetensors"), filepath.Join(scopeDir, "plain.safetensors"), theirs)
	first, err := l.Scan(ctx, scopeDir, library.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := statuses(first)
	if st["slime.safetensors"] != "known" || st["plain.safetensors"] != "known" || st["theirs.safetensors"] != "new" ||
		first.Counts["skipped"] != 0 || first.Counts["new"] != 1 || first.Counts["hashed"] != 3 || len(first.Indexed) != 1 {
		t.Fatalf("first scan: %+v %v", first.Files, first.Counts)
	}
	for _, f := range first.Files {
		if f.Status == "known" && !strings.Contains(f.Reason, "installed by scopectl") {
			t.Errorf("%s: %s", f.Path, f.Reason)
		}
	}
	ls, _ := l.Store.ListLoRAs(ctx, store.Filter{})
	if len(ls) != 3 {
		t.Fatalf("library has %d entries", len(ls))
	}
	second, err := l.Scan(ctx, scopeDir, library.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Counts["unchanged"] != 3 || second.Counts["hashed"] != 0 || len(second.Indexed) != 0 {
		t.Fatalf("second scan: %+v %v", second.Files, second.Counts)
	}
	// A file whose mtime moved but whose bytes did not is read again, and still unchanged.
	now := time.Now()
	os.Chtimes(theirs, now, now)
	third, _ := l.Scan(ctx, scopeDir, library.ScanOptions{})
	if third.Counts["unchanged"] != 3 || third.Counts["hashed"] != 1 {
		t.Fatalf("third scan: %+v %v", third.Files, third.Counts)
	}
}

// Names: a name taken by other content gets the sha256's first 8 hex digits; one file can
// be given a name; a file edited where it was indexed updates its entry under its name.
func TestScanNamesAndUpdates(t *testing.T) {
	l := open(t)
	if _, err := l.Add(ctx, gen(t, t.TempDir(), "slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B}), library.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	other := gen(t, dir, "slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 11})
	sr, err := l.Scan(ctx, dir, library.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := sr.Files[0]
	if f.Status != "new" || f.Name != "slime-"+f.SHA256[:8] || !strings.Contains(f.Reason, "used by another entry") {
		t.Fatalf("%+v", f)
	}
	if _, err := l.Scan(ctx, dir, library.ScanOptions{Name: "x"}); err == nil {
		t.Fatal("--name accepted for a folder")
	}
	one := gen(t, t.TempDir(), "slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 12})
	sr, err = l.Scan(ctx, one, library.ScanOptions{Name: "slime-v3"})
	if err != nil || sr.Files[0].Status != "new" || sr.Files[0].Name != "slime-v3" {
		t.Fatalf("%+v %v", sr, err)
	}
	// The indexed file is replaced by other content: the entry follows it, keeping its name.
	oldSHA := f.SHA256
	if err := loratest.Write(other, loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 13}); err != nil {
		t.Fatal(err)
	}
	sr, err = l.Scan(ctx, dir, library.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := sr.Files[0]
	if u.Status != "updated" || u.Name != f.Name || u.SHA256 == oldSHA || sr.Counts["updated"] != 1 {
		t.Fatalf("%+v", u)
	}
	if _, err := l.Store.GetBySHA(ctx, oldSHA); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the old content's entry is still there: %v", err)
	}
	if res, _ := l.Verify(ctx, []string{f.Name}); res[0].Status != "ok" {
		t.Fatalf("%+v", res)
	}
}
