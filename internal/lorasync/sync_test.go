package lorasync_test

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
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/file"
	"github.com/daydreamlive/scopectl/internal/scope"
)

var ctx = context.Background()

func setup(t *testing.T) (*library.Library, *file.Folder, string) {
	t.Helper()
	lib, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	src := t.TempDir()
	for name, s := range map[string]loratest.Spec{
		"toolkit": {Base: lora.BaseT2V14B},
		"kohya":   {Base: lora.BaseT2V14B, Family: lora.Kohya, Alpha: 4, Rank: 8, Seed: 2},
		"diff":    {Base: lora.BaseT2V14B, Family: lora.Diffusers, Seed: 3},
	} {
		p := filepath.Join(src, name+".safetensors")
		if err := loratest.Write(p, s); err != nil {
			t.Fatal(err)
		}
		if _, err := lib.Add(ctx, p, library.AddOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	r, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return lib, r, dir
}

func ops(res *lorasync.Result) string {
	var s []string
	for _, a := range res.Actions {
		s = append(s, a.Op+":"+a.File)
	}
	return strings.Join(s, " ")
}

func TestSyncSendsOnlyWhatChanged(t *testing.T) {
	lib, r, dir := setup(t)
	// Dry run: a plan, no writes.
	res, err := lorasync.Sync(ctx, lib, r, lorasync.Options{All: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 || strings.Count(ops(res), "put:") != 3 {
		t.Fatalf("dry run wrote %d files; plan %s", len(ents), ops(res))
	}
	res, err = lorasync.Sync(ctx, lib, r, lorasync.Options{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 || strings.Count(ops(res), "put:") != 3 {
		t.Fatalf("first sync: %s, %d bytes", ops(res), res.Sent)
	}
	// Every file Scope sees is scope-ready and recorded in the manifest with its sha256.
	m, err := scope.LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"toolkit", "kohya", "diff"} {
		p := filepath.Join(dir, n+".safetensors")
		rep, err := lora.Inspect(p, lora.InspectOptions{Hash: true})
		if err != nil || !rep.ScopeReady {
			t.Fatalf("%s: %v %v", n, err, rep.ScopeIssues)
		}
		if e, ok := m.Get(n + ".safetensors"); !ok || e.SHA256 != rep.SHA256 || e.SizeBytes != rep.Bytes {
			t.Fatalf("manifest entry for %s: %+v", n, e)
		}
	}
	// Nothing changed: nothing sent, nothing written.
	before := snapshot(t, dir)
	res, err = lorasync.Sync(ctx, lib, r, lorasync.Options{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 0 || strings.Contains(ops(res), "put:") {
		t.Fatalf("second sync sent %d bytes: %s", res.Sent, ops(res))
	}
	if after := snapshot(t, dir); after != before {
		t.Fatalf("second sync rewrote files:\n%s\n%s", before, after)
	}
	// A damaged remote file is detected by hash, not trusted by size, and replaced.
	p := filepath.Join(dir, "kohya.safetensors")
	f, _ := os.OpenFile(p, os.O_WRONLY, 0)
	f.WriteAt([]byte{1, 2, 3}, 5000)
	f.Close()
	if _, err := lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"kohya"}}); !errors.Is(err, library.ErrRefused) {
		t.Fatalf("changed file replaced without --force: %v", err)
	}
	res, err = lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"kohya"}, Force: true})
	if err != nil || ops(res) != "put:kohya.safetensors" {
		t.Fatalf("%v %s", err, ops(res))
	}
}

func snapshot(t *testing.T, dir string) string {
	ents, _ := os.ReadDir(dir)
	var s []string
	for _, e := range ents {
		fi, _ := e.Info()
		s = append(s, e.Name()+"@"+fi.ModTime().String())
	}
	return strings.Join(s, "\n")
}

func TestSyncDeleteTouchesOnlyOwnFiles(t *testing.T) {
	lib, r, dir := setup(t)
	os.WriteFile(filepath.Join(dir, "theirs.safetensors"), []byte("user's own"), 0o644)
	if _, err := lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"toolkit", "kohya"}}); err != nil {
		t.Fatal(err)
	}
	res, err := lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"toolkit"}, Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ops(res), "delete:kohya.safetensors") || strings.Contains(ops(res), "theirs") {
		t.Fatalf("%s", ops(res))
	}
	if _, err := os.Stat(filepath.Join(dir, "theirs.safetensors")); err != nil {
		t.Fatal("deleted a file scopectl did not put there")
	}
	if _, err := os.Stat(filepath.Join(dir, "kohya.safetensors")); !os.IsNotExist(err) {
		t.Fatal("kohya not deleted")
	}
	m, _ := scope.LoadManifest(dir)
	if _, ok := m.Get("kohya.safetensors"); ok {
		t.Fatal("manifest still lists a deleted file")
	}
	var owned lorasync.Owned
	b, _ := os.ReadFile(filepath.Join(dir, lorasync.OwnedName))
	if json.Unmarshal(b, &owned); len(owned.Files) != 1 {
		t.Fatalf("owned %v", owned.Files)
	}
	// A foreign file with a wanted name is refused without --force.
	os.WriteFile(filepath.Join(dir, "diff.safetensors"), []byte("not ours"), 0o644)
	if _, err := lorasync.Sync(ctx, lib, r, lorasync.Options{Names: []string{"diff"}}); !errors.Is(err, library.ErrRefused) {
		t.Fatalf("foreign file: %v", err)
	}
}

func TestSyncBaseGate(t *testing.T) {
	lib, r, _ := setup(t)
	if _, err := lorasync.Sync(ctx, lib, r, lorasync.Options{All: true, Pipeline: "longlive"}); !errors.Is(err, library.ErrRefused) {
		t.Fatalf("14B LoRAs synced for a 1.3B pipeline: %v", err)
	}
}

// pushOnly is a remote that cannot be listed or read back, like croc.
type pushOnly struct{ *file.Folder }

func (p pushOnly) List(context.Context) ([]remote.Entry, error) { return nil, errors.ErrUnsupported }

func TestSyncToPushOnlyRemote(t *testing.T) {
	lib, r, dir := setup(t)
	res, err := lorasync.Sync(ctx, lib, pushOnly{r}, lorasync.Options{Names: []string{"toolkit"}})
	if err != nil {
		t.Fatal(err)
	}
	if ops(res) != "put:toolkit.safetensors" || len(res.Warnings) == 0 {
		t.Fatalf("%s %v", ops(res), res.Warnings)
	}
	if _, err := os.Stat(filepath.Join(dir, "lora_manifest.json")); !os.IsNotExist(err) {
		t.Fatal("wrote a manifest through a push-only remote")
	}
	if _, err := lorasync.Sync(ctx, lib, pushOnly{r}, lorasync.Options{Names: []string{"toolkit"}, Delete: true}); err == nil {
		t.Fatal("--delete accepted on a push-only remote")
	}
}
