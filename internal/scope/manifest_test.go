package scope

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// scopeWritten is a manifest as a (newer) Scope might write it: pydantic
// output plus unknown fields at every level, and an entry scopectl did not write.
const scopeWritten = `{
  "version": "1.0",
  "future_top": {"nested": [1, 2.50, "x<y>&"], "n": null},
  "entries": {
    "pixar_10_epochs.safetensors": {
      "filename": "pixar_10_epochs.safetensors",
      "provenance": {
        "source": "huggingface",
        "repo_id": "Remade-AI/Pixar",
        "hf_filename": "pixar_10_epochs.safetensors",
        "model_id": null,
        "version_id": null,
        "url": null,
        "future_prov": 12345678901234567890
      },
      "sha256": "aaaa",
      "size_bytes": 359616128,
      "added_at": "2025-11-21T12:20:28.123456Z",
      "future_entry": {"k": "\u00e9"}
    },
    "sub/jinx.safetensors": {
      "filename": "sub/jinx.safetensors",
      "provenance": {"source": "civitai", "model_id": "1332383", "version_id": "1679582", "url": "https://civitai.com/api/download/models/1679582"},
      "sha256": "bbbb",
      "size_bytes": 1,
      "added_at": "2025-11-21T12:20:28"
    },
    "weird.safetensors": {"filename": "weird.safetensors", "provenance": {"source": "github"}, "sha256": "cc", "size_bytes": "big", "added_at": 5}
  }
}`

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("unmarshal a: %v", err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("unmarshal b: %v", err)
	}
	return reflect.DeepEqual(x, y)
}

func TestManifestRoundTripPreservesForeign(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ManifestName), []byte(scopeWritten), 0o640); err != nil {
		t.Fatal(err)
	}
	m, err := LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 2 || !reflect.DeepEqual(m.Unparsed(), []string{"weird.safetensors"}) {
		t.Fatalf("entries %d unparsed %v", len(m.Entries), m.Unparsed())
	}
	e, ok := m.Get("pixar_10_epochs.safetensors")
	if !ok || e.Provenance.Source != "huggingface" || *e.Provenance.RepoID != "Remade-AI/Pixar" || e.Provenance.ModelID != nil || e.SizeBytes != 359616128 {
		t.Fatalf("bad entry %+v", e)
	}
	if want := time.Date(2025, 11, 21, 12, 20, 28, 123456000, time.UTC); !e.AddedAt.Equal(want) {
		t.Fatalf("added_at %v", e.AddedAt)
	}

	// Unchanged save: semantically identical, unknown values textually kept.
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(filepath.Join(dir, ManifestName))
	if !jsonEqual(t, out, []byte(scopeWritten)) {
		t.Fatalf("round trip changed content:\n%s", out)
	}
	for _, s := range []string{`12345678901234567890`, `2.50`, `"x<y>&"`, `"\u00e9"`, `"2025-11-21T12:20:28.123456Z"`, `"2025-11-21T12:20:28"`, `"size_bytes": "big"`} {
		if !strings.Contains(string(out), s) {
			t.Errorf("output lost %s:\n%s", s, out)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, ManifestName)); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v", fi.Mode().Perm())
	}

	// Add ours, modify a foreign entry, remove nothing foreign.
	added := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)
	m.Set(ManifestEntry{Filename: "ours.safetensors", Provenance: Provenance{Source: SourceLocal},
		SHA256: "dddd", SizeBytes: 42, AddedAt: added})
	e.SizeBytes = 7
	m.Set(e)
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	m2, err := LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m2.Entries) != 3 || len(m2.Unparsed()) != 1 {
		t.Fatalf("after save: %d entries, unparsed %v", len(m2.Entries), m2.Unparsed())
	}
	out, _ = os.ReadFile(filepath.Join(dir, ManifestName))
	for _, s := range []string{`"future_entry": {`, `"future_prov": 12345678901234567890`, `"future_top"`,
		`"added_at": "2026-11-25T12:00:00.123456+00:00"`, `"size_bytes": 7`, `"repo_id": null`} {
		if !strings.Contains(string(out), s) {
			t.Errorf("output lacks %s:\n%s", s, out)
		}
	}
	// Modified entry is re-emitted in Python isoformat.
	if !strings.Contains(string(out), `"added_at": "2025-11-21T12:20:28.123456+00:00"`) {
		t.Errorf("modified entry time not re-emitted:\n%s", out)
	}
	// Sorted keys, 2-space indent.
	if !strings.HasPrefix(string(out), "{\n  \"entries\": {\n    \"ours.safetensors\"") {
		t.Errorf("unexpected layout:\n%s", out[:80])
	}

	if !m2.Remove("weird.safetensors") || !m2.Remove("ours.safetensors") || m2.Remove("nope") {
		t.Fatal("Remove results wrong")
	}
	if err := m2.Save(dir); err != nil {
		t.Fatal(err)
	}
	m3, _ := LoadManifest(dir)
	if len(m3.Entries) != 2 || len(m3.Unparsed()) != 0 {
		t.Fatalf("after remove: %d %v", len(m3.Entries), m3.Unparsed())
	}
	// No temp files left.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir has %d files", len(ents))
	}
}

func TestLoadMissingAndEmpty(t *testing.T) {
	dir := t.TempDir()
	m, err := LoadManifest(dir)
	if err != nil || m.Version != "1.0" || len(m.Entries) != 0 {
		t.Fatalf("%+v %v", m, err)
	}
	m.Set(ManifestEntry{Filename: `a\b.safetensors`, Provenance: Provenance{Source: SourceURL, URL: Str("https://x/y")}, SHA256: "ee", SizeBytes: 1})
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(filepath.Join(dir, ManifestName))
	var v struct {
		Version string
		Entries map[string]map[string]any
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Version != "1.0" || len(v.Entries) != 1 {
		t.Fatalf("%s %v", out, err)
	}
	for _, e := range v.Entries {
		if _, err := ParsePyTime(e["added_at"].(string)); err != nil {
			t.Fatal(err)
		}
		p := e["provenance"].(map[string]any)
		if _, ok := p["repo_id"]; !ok || p["repo_id"] != nil {
			t.Fatalf("nulls not emitted: %v", p)
		}
	}
	os.WriteFile(filepath.Join(dir, ManifestName), []byte("  \n"), 0o644)
	if m, err := LoadManifest(dir); err != nil || len(m.Entries) != 0 {
		t.Fatal(err)
	}
}

func TestMalformedNamesFile(t *testing.T) {
	for _, content := range []string{"{\"version\": \"1.0\",\n \"entries\": {", `[1,2]`, `{"entries": []}`, `null`, `{"version": 2}`} {
		dir := t.TempDir()
		p := filepath.Join(dir, ManifestName)
		os.WriteFile(p, []byte(content), 0o644)
		_, err := LoadManifest(dir)
		if err == nil || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), "\n") || !errors.Is(err, ErrMalformedManifest) {
			t.Errorf("%q: bad error %v", content, err)
		}
		if err := UpdateManifest(dir, func(*Manifest) error { return nil }); err == nil {
			t.Errorf("%q: UpdateManifest overwrote a malformed manifest", content)
		}
		if b, _ := os.ReadFile(p); string(b) != content {
			t.Errorf("malformed manifest was modified")
		}
	}
}

func TestSaveRejectsInvalidEntry(t *testing.T) {
	dir := t.TempDir()
	m := NewManifest()
	m.Set(ManifestEntry{Filename: "x.safetensors", Provenance: Provenance{Source: "training"}})
	if err := m.Save(dir); err == nil {
		t.Fatal("invalid source accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, ManifestName)); !os.IsNotExist(err) {
		t.Fatal("file written")
	}
}

func TestPyTime(t *testing.T) {
	ref := time.Date(2026, 11, 25, 12, 0, 0, 123456000, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-11-25T12:00:00.123456+00:00": ref,
		"2026-11-25T12:00:00.123456Z":      ref,
		"2026-11-25T12:00:00.123456":       ref,
		"2026-11-25 12:00:00.123456+00:00": ref,
		"2026-11-25T13:00:00.123456+01:00": ref,
		"2026-11-25T12:00:00.123456+0000":  ref,
		"2026-11-25T12:00:00Z":             ref.Truncate(time.Second),
		"2026-11-25T12:00:00+00:00":        ref.Truncate(time.Second),
		"2026-11-25T12:00:00":              ref.Truncate(time.Second),
		"2026-11-25T12:00:00.1Z":           ref.Truncate(time.Second).Add(100 * time.Millisecond),
	} {
		got, err := ParsePyTime(in)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParsePyTime(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "yesterday", "2026-11-25", "2026-13-01T00:00:00Z"} {
		if _, err := ParsePyTime(bad); err == nil {
			t.Errorf("ParsePyTime(%q) succeeded", bad)
		}
	}
	if s := FormatPyTime(ref.Add(789)); s != "2026-11-25T12:00:00.123456+00:00" {
		t.Errorf("got %s", s)
	}
	if s := FormatPyTime(ref.Truncate(time.Second).In(time.FixedZone("x", 3600))); s != "2026-11-25T12:00:00+00:00" {
		t.Errorf("got %s", s)
	}
	if s := FormatPyTime(ref.Truncate(time.Second).Add(5 * time.Microsecond)); s != "2026-11-25T12:00:00.000005+00:00" {
		t.Errorf("got %s", s)
	}
}

func TestConcurrentUpdateManifest(t *testing.T) {
	dir := t.TempDir()
	// A foreign entry that must survive.
	os.WriteFile(filepath.Join(dir, ManifestName), []byte(scopeWritten), 0o644)
	const workers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				name := fmt.Sprintf("w%d/l%d.safetensors", w, i)
				errs <- UpdateManifest(dir, func(m *Manifest) error {
					m.Set(ManifestEntry{Filename: name, Provenance: Provenance{Source: SourceLocal}, SHA256: "ff", SizeBytes: int64(i)})
					return nil
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m, err := LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 2+workers*each || len(m.Unparsed()) != 1 {
		t.Fatalf("got %d entries (+%d unparsed), want %d", len(m.Entries), len(m.Unparsed()), 2+workers*each)
	}
	// fn error: nothing written.
	before, _ := os.ReadFile(filepath.Join(dir, ManifestName))
	boom := errors.New("boom")
	if err := UpdateManifest(dir, func(m *Manifest) error { m.Entries = nil; return boom }); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, ManifestName))
	if string(before) != string(after) {
		t.Fatal("manifest changed after fn error")
	}
}

func TestPipelines(t *testing.T) {
	want := []string{"krea-realtime-video", "longlive", "memflow", "reward-forcing", "streamdiffusionv2"}
	if got := Pipelines(); !reflect.DeepEqual(got, want) {
		t.Fatalf("%v", got)
	}
	if err := CheckPipeline("longlive", "wan2.1-t2v-1.3b"); err != nil {
		t.Fatal(err)
	}
	if err := CheckPipeline("krea-realtime-video", "wan2.1-t2v-14b"); err != nil {
		t.Fatal(err)
	}
	err := CheckPipeline("longlive", "wan2.1-t2v-14b")
	if !errors.Is(err, ErrBaseMismatch) || err.Error() != "LoRA base wan2.1-t2v-14b does not fit pipeline longlive (takes wan2.1-t2v-1.3b LoRAs); use --force to install anyway" {
		t.Fatalf("%v", err)
	}
	if err := CheckPipeline("longlive", "unknown"); !errors.Is(err, ErrBaseMismatch) {
		t.Fatal(err)
	}
	err = CheckPipeline("nope", "wan2.1-t2v-14b")
	if !errors.Is(err, ErrUnknownPipeline) || !strings.Contains(err.Error(), strings.Join(want, ", ")) {
		t.Fatalf("%v", err)
	}
}

// TestCrossProcessUpdateManifest runs several processes that update the same
// manifest concurrently; the flock must keep every entry.
func TestCrossProcessUpdateManifest(t *testing.T) {
	if dir := os.Getenv("SCOPE_MANIFEST_CHILD_DIR"); dir != "" {
		id := os.Getenv("SCOPE_MANIFEST_CHILD_ID")
		for i := range 10 {
			err := UpdateManifest(dir, func(m *Manifest) error {
				m.Set(ManifestEntry{Filename: fmt.Sprintf("p%s-%d.safetensors", id, i), Provenance: Provenance{Source: SourceLocal}, SHA256: "ab", SizeBytes: 1})
				return nil
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		return
	}
	dir := t.TempDir()
	const procs = 4
	cmds := make([]*exec.Cmd, procs)
	for p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrossProcessUpdateManifest$")
		cmd.Env = append(os.Environ(), "SCOPE_MANIFEST_CHILD_DIR="+dir, fmt.Sprintf("SCOPE_MANIFEST_CHILD_ID=%d", p))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[p] = cmd
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	m, err := LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != procs*10 {
		t.Fatalf("got %d entries, want %d", len(m.Entries), procs*10)
	}
}
