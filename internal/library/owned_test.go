package library_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/library"
)

// FuzzParseOwned: any bytes give a record or one line naming the record, never a panic;
// a record accepted names only files of its own folder and survives a write and a read.
func FuzzParseOwned(f *testing.F) {
	for _, s := range []string{
		`{"version": 1, "files": {}}`,
		`{"version": 1, "files": {"a.safetensors": {"sha256": "ab", "size": 3, "source_sha256": "cd", "name": "a", "synced_at": "2026-01-02T03:04:05.5+01:00", "form": "as-is"}}}`,
		`{"version": 2, "files": {"b.safetensors": {"size": -1, "future": [1]}}, "future": null}`,
		`{"files": {"../x": {}}}`, `{"files": {"a/b": {}}}`, `{"files": {"": {}}}`, `{"files": {".scopectl-owned": {}}}`,
		`{"files": null}`, `{"files": []}`, `null`, `[]`, ``, `{"files": {"a": {"synced_at": "yesterday"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := library.ParseOwned(b, "file:///x")
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, library.OwnedName) {
				t.Fatalf("error is not one line naming the record: %q", msg)
			}
			return
		}
		for name := range o.Files {
			if name == "" || name == ".." || strings.ContainsAny(name, "/\\") {
				t.Fatalf("accepted %q", name)
			}
		}
		enc, err := o.Encode()
		if err != nil {
			t.Fatal(err)
		}
		o2, err := library.ParseOwned(enc, "file:///x")
		if err != nil {
			t.Fatalf("own encoding rejected: %v\n%s", err, enc)
		}
		if enc2, _ := o2.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the record:\n%s\n%s", enc, enc2)
		}
	})
}
