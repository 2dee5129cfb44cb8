package scope_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/scope"
)

// The seed corpus also lives in testdata/fuzz/FuzzManifest (hand-written
// manifests and inputs the fuzzer found).

func FuzzManifest(f *testing.F) {
	for _, s := range []string{
		`{"version": "1.0", "entries": {}}`,
		`{"version": "1.0", "entries": {"a.safetensors": {"filename": "a.safetensors", "provenance": {"source": "local", "repo_id": null, "hf_filename": null, "model_id": null, "version_id": null, "url": null}, "sha256": "ab", "size_bytes": 12, "added_at": "2025-11-21T12:20:28.123456+00:00"}}}`,
		`{"version": "1.0", "future": [1, 2.50, "x<y>&", null], "entries": {"sub/b.safetensors": {"filename": "sub/b.safetensors", "provenance": {"source": "civitai", "model_id": "1", "version_id": "2", "url": "https://civitai.com/api/download/models/2?token=x&y=1", "extra": {"k": "\u00e9"}}, "sha256": "", "size_bytes": 0, "added_at": "2025-11-21 12:20:28Z", "future_entry": true}}}`,
		`{"entries": {"w.safetensors": {"filename": "w.safetensors", "provenance": {"source": "github"}, "sha256": "cc", "size_bytes": "big", "added_at": 5}, "n": null, "x": [], "y": "s"}}`,
		`{"version": "2.0", "entries": null}`,
		`{"entries": {"k": {"filename": "other.safetensors", "provenance": {"source": "url"}, "sha256": "s", "size_bytes": -1, "added_at": "2025-01-01T00:00:00.5-05:30"}}}`,
		`{"entries": {"t": {"filename": "t", "provenance": {"source": "url"}, "sha256": "s", "size_bytes": 1e3, "added_at": "9999-12-31T23:59:59-23:59"}}}`,
		`{"entries": {"late": {"filename": "late", "provenance": {"source": "local"}, "sha256": "", "size_bytes": 1, "added_at": "9999-12-31T23:59:59.999999-23:59"}}}`,
		`{"entries": {"early": {"filename": "early", "provenance": {"source": "local"}, "sha256": "", "size_bytes": 1, "added_at": "0001-01-01T00:00:00+00:01"}}}`,
		`{"version": "1.0", "version": "1.1", "entries": {"d": 1, "d": {"filename": "d", "provenance": {"source": "local"}, "sha256": "", "size_bytes": 1, "added_at": "2025-01-01T00:00:00z"}}}`,
		`{"entries": {"big": {"filename": "big", "provenance": {"source": "local"}, "sha256": "", "size_bytes": 99999999999999999999, "added_at": "2025-01-01T00:00:00"}}, "huge": 1e400}`,
		`{"version": null}`,
		`{"version": 1}`,
		`{"entries": []}`,
		`null`,
		`[]`,
		"",
		" \n\t",
		`{"entries": {"\ud800": {}, "\u0000": {}}}`,
		"{\"entries\": {\"\xff\": {}}}",
	} {
		f.Add([]byte(s))
	}
	// One directory per fuzzing process, reused: inputs run one at a time.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		var m scope.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			checkLoadFails(t, dir, data)
			return
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("Encode of a parsed manifest: %v", err)
		}
		var m2 scope.Manifest
		if err := json.Unmarshal(enc, &m2); err != nil {
			t.Fatalf("Encode output does not parse: %v\n%s", err, enc)
		}
		sameManifest(t, &m, &m2)
		enc2, err := m2.Encode()
		if err != nil {
			t.Fatalf("Encode of re-parsed manifest: %v", err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode is not stable:\n%s\n%s", enc, enc2)
		}
		samePreserved(t, data, enc)

		// LoadManifest reads the same file the same way.
		if err := os.WriteFile(filepath.Join(dir, scope.ManifestName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		lm, err := scope.LoadManifest(dir)
		if err != nil {
			t.Fatalf("json.Unmarshal parses it but LoadManifest fails: %v", err)
		}
		sameManifest(t, &m, lm)

		// Changed entries are encoded afresh from their fields: if Encode
		// accepts them, they must read back as the same entries (added_at at
		// the microsecond precision Python keeps), not as unparsable ones.
		for k, e := range lm.Entries {
			e.SHA256 += "0"
			lm.Entries[k] = e
		}
		enc3, err := lm.Encode()
		if err != nil {
			return // Validate refused a changed entry
		}
		var m3 scope.Manifest
		if err := json.Unmarshal(enc3, &m3); err != nil {
			t.Fatalf("Encode output with changed entries does not parse: %v\n%s", err, enc3)
		}
		for k, e := range lm.Entries {
			e.AddedAt = e.AddedAt.Truncate(time.Microsecond)
			lm.Entries[k] = e
		}
		sameManifest(t, lm, &m3)
	})
}

// checkLoadFails: what json.Unmarshal rejects, LoadManifest rejects as
// malformed too (unless the file is blank, which is an empty manifest).
func checkLoadFails(t *testing.T, dir string, data []byte) {
	if err := os.WriteFile(filepath.Join(dir, scope.ManifestName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := scope.LoadManifest(dir)
	if len(bytes.TrimSpace(data)) == 0 {
		if err != nil || len(m.Entries) != 0 || m.Version != scope.ManifestVersion {
			t.Fatalf("blank file: %v %+v", err, m)
		}
		return
	}
	if err == nil || !errors.Is(err, scope.ErrMalformedManifest) {
		t.Fatalf("LoadManifest of an unparsable manifest: %v", err)
	}
	if m != nil {
		t.Fatal("manifest with error")
	}
	if bytes.ContainsAny([]byte(err.Error()), "\n\r") {
		t.Fatalf("multi-line error: %q", err)
	}
}

func sameManifest(t *testing.T, a, b *scope.Manifest) {
	t.Helper()
	if a.Version != b.Version && !(a.Version == "" && b.Version == scope.ManifestVersion) { // "" is written as the default
		t.Fatalf("version %q → %q", a.Version, b.Version)
	}
	if !slices.Equal(a.Unparsed(), b.Unparsed()) {
		t.Fatalf("unparsed entries %q → %q", a.Unparsed(), b.Unparsed())
	}
	if len(a.Entries) != len(b.Entries) {
		t.Fatalf("%d entries → %d", len(a.Entries), len(b.Entries))
	}
	for k, e := range a.Entries {
		e2, ok := b.Entries[k]
		if !ok {
			t.Fatalf("entry %q lost", k)
		}
		if e.Filename != e2.Filename || e.SHA256 != e2.SHA256 || e.SizeBytes != e2.SizeBytes || !e.AddedAt.Equal(e2.AddedAt) {
			t.Fatalf("entry %q: %+v → %+v", k, e, e2)
		}
		p, p2 := e.Provenance, e2.Provenance
		if p.Source != p2.Source || !sameStr(p.RepoID, p2.RepoID) || !sameStr(p.HFFilename, p2.HFFilename) ||
			!sameStr(p.ModelID, p2.ModelID) || !sameStr(p.VersionID, p2.VersionID) || !sameStr(p.URL, p2.URL) {
			t.Fatalf("entry %q provenance: %+v → %+v", k, p, p2)
		}
	}
}

func sameStr(a, b *string) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// samePreserved: everything in the input, known or not, is in the output
// with the same JSON value; only a missing version or missing/null entries
// are filled in.
func samePreserved(t *testing.T, in, out []byte) {
	t.Helper()
	var a, b map[string]any
	if json.Unmarshal(in, &a) != nil {
		return // e.g. numbers beyond float64, which Manifest keeps verbatim
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("output: %v", err)
	}
	if v, ok := a["version"]; !ok || v == "" {
		a["version"] = scope.ManifestVersion
	}
	if a["entries"] == nil {
		a["entries"] = map[string]any{}
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("not preserved:\nin:  %s\nout: %s", in, out)
	}
}
