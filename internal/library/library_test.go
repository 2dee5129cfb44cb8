package library_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

func open(t *testing.T) *library.Library {
	t.Helper()
	l, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func gen(t *testing.T, dir, name string, s loratest.Spec) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := loratest.Write(p, s); err != nil {
		t.Fatal(err)
	}
	return p
}

var ctx = context.Background()

func TestAddDedupesAndNames(t *testing.T) {
	l := open(t)
	src := t.TempDir()
	a := gen(t, src, "slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	r, err := l.Add(ctx, a, library.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "added" || r.LoRA.Name != "slime" || !r.LoRA.Managed || r.LoRA.Base != lora.BaseT2V1_3B {
		t.Fatalf("%+v", r)
	}
	if got, _ := lora.HashFile(r.LoRA.Path); got != r.LoRA.SHA256 {
		t.Fatal("blob hash mismatch")
	}
	// Same content under another name: one entry, two origins.
	b := filepath.Join(src, "copy.safetensors")
	data, _ := os.ReadFile(a)
	os.WriteFile(b, data, 0o644)
	r2, err := l.Add(ctx, b, library.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Status != "exists" || len(r2.LoRA.Origins) != 2 || r2.LoRA.Name != "slime" {
		t.Fatalf("%+v", r2)
	}
	// Different content, same name: refused with a hint.
	c := gen(t, t.TempDir(), "slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 9})
	if _, err := l.Add(ctx, c, library.AddOptions{}); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Fatal(err)
	}
	if r3, err := l.Add(ctx, c, library.AddOptions{Name: "slime-v2"}); err != nil || r3.LoRA.Name != "slime-v2" {
		t.Fatal(err)
	}
	for _, bad := range []string{"../x", "a/b", ".hidden", "x\ny"} {
		if _, err := l.Add(ctx, c, library.AddOptions{Name: bad}); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	ls, _ := l.Store.ListLoRAs(ctx, store.Filter{Base: lora.BaseT2V1_3B})
	if len(ls) != 2 {
		t.Fatalf("list %d", len(ls))
	}
	var rep lora.Report
	if err := json.Unmarshal(ls[0].Info, &rep); err != nil || rep.Family != lora.Comfy {
		t.Fatalf("info %v %v", err, rep.Family)
	}
}

func TestAddRefusesNonLoRA(t *testing.T) {
	l := open(t)
	p := filepath.Join(t.TempDir(), "model.ckpt")
	os.WriteFile(p, append([]byte{0x80, 0x04}, make([]byte, 100)...), 0o644)
	if _, err := l.Add(ctx, p, library.AddOptions{}); err == nil || !strings.Contains(err.Error(), "pickle") {
		t.Fatal(err)
	}
	ls, _ := l.Store.ListLoRAs(ctx, store.Filter{})
	if len(ls) != 0 {
		t.Fatal("something was added")
	}
	entries, _ := os.ReadDir(l.BlobDir)
	if len(entries) != 0 {
		t.Fatal("blob dir not empty")
	}
}

func TestVerifyFindsDamage(t *testing.T) {
	l := open(t)
	dir := t.TempDir()
	a := gen(t, dir, "a.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	b := gen(t, dir, "b.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 2})
	c := gen(t, dir, "c.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 3})
	for _, p := range []string{a, b} {
		if _, err := l.Add(ctx, p, library.AddOptions{InPlace: true}); err != nil {
			t.Fatal(err)
		}
	}
	rc, _ := l.Add(ctx, c, library.AddOptions{})
	os.Remove(a)
	f, _ := os.OpenFile(b, os.O_WRONLY, 0)
	f.WriteAt([]byte{0xff}, 200)
	f.Close()
	res, err := l.Verify(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range res {
		got[r.Name] = r.Status
	}
	if got["a"] != "missing" || got["b"] != "corrupt" || got["c"] != "ok" {
		t.Fatalf("%v", got)
	}
	e, _ := l.Store.GetLoRA(ctx, rc.LoRA.SHA256[:8])
	if e.VerifiedAt == nil {
		t.Fatal("verified_at not recorded")
	}
}

func TestScanIndexesInPlace(t *testing.T) {
	l := open(t)
	dir := t.TempDir()
	gen(t, dir, "one.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	gen(t, filepath.Join(dir, "sub"), "two.safetensors", loratest.Spec{Family: lora.Kohya, Alpha: 1, Seed: 5})
	os.WriteFile(filepath.Join(dir, "junk.safetensors"), []byte("nope"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hi"), 0o644)
	sr, err := l.Scan(ctx, dir, library.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res := sr.Indexed
	var skipped []string
	for _, f := range sr.Files {
		if f.Status == "skipped" {
			skipped = append(skipped, f.Reason)
		}
	}
	if len(res) != 2 || len(skipped) != 1 || !strings.Contains(skipped[0], "junk.safetensors") || sr.Counts["new"] != 2 {
		t.Fatalf("res %d skipped %v", len(res), skipped)
	}
	for _, r := range res {
		if r.LoRA.Managed || r.Method != "indexed" || !strings.HasPrefix(r.LoRA.Path, dir) {
			t.Fatalf("%+v", r)
		}
	}
}

func TestInstallUninstall(t *testing.T) {
	l := open(t)
	scopeDir := t.TempDir()
	// A manifest entry Scope wrote itself must survive.
	os.WriteFile(filepath.Join(scopeDir, scope.ManifestName), []byte(`{"version":"1.0","entries":{"theirs.safetensors":{"filename":"theirs.safetensors","provenance":{"source":"url","repo_id":null,"hf_filename":null,"model_id":null,"version_id":null,"url":"https://x"},"sha256":"ab","size_bytes":1,"added_at":"2026-01-01T00:00:00+00:00"}}}`), 0o644)
	os.WriteFile(filepath.Join(scopeDir, "theirs.safetensors"), []byte("x"), 0o644)
	src := t.TempDir()
	toolkit := gen(t, src, "toolkit.safetensors", loratest.Spec{Base: lora.BaseT2V14B})
	kohya := gen(t, src, "kohya.safetensors", loratest.Spec{Base: lora.BaseT2V14B, Family: lora.Kohya, Alpha: 8, Rank: 4})
	diff := gen(t, src, "diff.safetensors", loratest.Spec{Base: lora.BaseT2V14B, Family: lora.Diffusers})
	small := gen(t, src, "small.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	for _, p := range []string{toolkit, kohya, diff, small} {
		if _, err := l.Add(ctx, p, library.AddOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	opt := library.InstallOptions{Dir: scopeDir, Pipeline: "krea-realtime-video"}
	r, err := lorasync.Install(ctx, l, "toolkit", opt)
	if err != nil || r.Form != "as-is" || r.Status != "installed" {
		t.Fatalf("%+v %v", r, err)
	}
	if r2, err := lorasync.Install(ctx, l, "toolkit", opt); err != nil || r2.Status != "unchanged" {
		t.Fatalf("%+v %v", r2, err)
	}
	if r, err := lorasync.Install(ctx, l, "kohya", opt); err != nil || r.Form != "as-is" {
		t.Fatalf("kohya: %+v %v", r, err)
	}
	if r, err := lorasync.Install(ctx, l, "diff", opt); err != nil || r.Form != "diffusion_model" {
		t.Fatalf("diffusers: %+v %v", r, err)
	} else if rep, _ := lora.Inspect(r.Path, lora.InspectOptions{}); !rep.ScopeReady || rep.Family != lora.Comfy {
		t.Fatalf("installed diffusers LoRA not scope-ready: %v", rep.ScopeIssues)
	}
	// Base gate.
	if _, err := lorasync.Install(ctx, l, "small", opt); !errors.Is(err, library.ErrRefused) || !strings.Contains(err.Error(), "1.3b") {
		t.Fatalf("gate: %v", err)
	}
	if _, err := os.Stat(filepath.Join(scopeDir, "small.safetensors")); err == nil {
		t.Fatal("refused LoRA was written")
	}
	if r, err := lorasync.Install(ctx, l, "small", library.InstallOptions{Dir: scopeDir, Pipeline: "krea-realtime-video", Force: true}); err != nil || len(r.Warnings) == 0 {
		t.Fatalf("force: %+v %v", r, err)
	}
	m, err := scope.LoadManifest(scopeDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Get("theirs.safetensors"); !ok {
		t.Fatal("foreign manifest entry dropped")
	}
	e, ok := m.Get("toolkit.safetensors")
	if !ok || e.Provenance.Source != "local" || len(e.SHA256) != 64 || e.SizeBytes == 0 {
		t.Fatalf("manifest entry %+v", e)
	}
	// A file scopectl did not install is never replaced or removed.
	if _, err := lorasync.Uninstall(ctx, l, "theirs", scopeDir, false); err == nil {
		t.Fatal("uninstalled a foreign file")
	}
	os.WriteFile(filepath.Join(src, "theirs.safetensors"), nil, 0o644)
	if _, err := lorasync.Uninstall(ctx, l, "toolkit", scopeDir, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(scopeDir, "toolkit.safetensors")); !os.IsNotExist(err) {
		t.Fatal("file still there")
	}
	m, _ = scope.LoadManifest(scopeDir)
	if _, ok := m.Get("toolkit.safetensors"); ok {
		t.Fatal("manifest entry kept")
	}
	if _, ok := m.Get("theirs.safetensors"); !ok {
		t.Fatal("foreign manifest entry dropped on uninstall")
	}
	// No temp files left behind.
	ents, _ := os.ReadDir(scopeDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && e.Name() != ".scopectl.lock" && e.Name() != library.OwnedName {
			t.Fatalf("left %s", e.Name())
		}
	}
}

func TestAddAcrossFilesystemsCopies(t *testing.T) {
	shm := "/dev/shm"
	if fi, err := os.Stat(shm); err != nil || !fi.IsDir() {
		t.Skip("no /dev/shm")
	}
	dir, err := os.MkdirTemp(shm, "scopectl-test-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	l := open(t)
	p := gen(t, dir, "shm.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	// Index in place first, then add: the entry becomes managed, by a verified copy
	// (a hardlink cannot cross filesystems; tmpfs has no reflink).
	if r, err := l.Add(ctx, p, library.AddOptions{InPlace: true}); err != nil || r.LoRA.Managed {
		t.Fatalf("%+v %v", r, err)
	}
	r, err := l.Add(ctx, p, library.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != "copy" || !r.LoRA.Managed || r.LoRA.Path != l.BlobPath(r.LoRA.SHA256) {
		t.Fatalf("%+v", r)
	}
	if got, _ := lora.HashFile(r.LoRA.Path); got != r.LoRA.SHA256 {
		t.Fatal("copied blob differs")
	}
}
