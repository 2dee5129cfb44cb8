// Package scope knows about Daydream Scope: its lora_manifest.json and
// which pipelines take which LoRA base models.
package scope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
)

// ManifestName is the name of Scope's manifest inside its LoRA directory.
const ManifestName = "lora_manifest.json"

// ManifestVersion is the manifest format version Scope writes.
const ManifestVersion = "1.0"

// Provenance sources Scope accepts (LoRAProvenance.source is a Literal).
const (
	SourceHuggingFace = "huggingface"
	SourceCivitAI     = "civitai"
	SourceURL         = "url"
	SourceLocal       = "local"
)

// ErrMalformedManifest is wrapped by LoadManifest when the file is not a
// manifest it can read.
var ErrMalformedManifest = errors.New("malformed LoRA manifest")

// Provenance mirrors Scope's LoRAProvenance. Nil pointers are written as
// null, like pydantic does. Unknown fields are preserved.
type Provenance struct {
	Source     string  `json:"source"`
	RepoID     *string `json:"repo_id"`
	HFFilename *string `json:"hf_filename"`
	ModelID    *string `json:"model_id"`
	VersionID  *string `json:"version_id"`
	URL        *string `json:"url"`

	extra map[string]json.RawMessage
}

// ManifestEntry mirrors Scope's LoRAManifestEntry. Unknown fields are
// preserved, and an entry loaded from disk whose known fields are left
// unchanged is written back exactly as it was read.
type ManifestEntry struct {
	Filename   string     `json:"filename"`
	Provenance Provenance `json:"provenance"`
	SHA256     string     `json:"sha256"`
	SizeBytes  int64      `json:"size_bytes"`
	AddedAt    time.Time  `json:"added_at"` // written like Python isoformat (FormatPyTime)

	extra map[string]json.RawMessage
	raw   json.RawMessage // as read from disk
	canon []byte          // fresh encoding of the known fields at load time
}

// Manifest mirrors Scope's LoRAManifest. Entries are keyed by POSIX paths
// relative to the LoRA directory. Unknown top-level fields and entries that
// do not parse as LoRAManifestEntry are preserved as they are.
type Manifest struct {
	Version string                   `json:"version"`
	Entries map[string]ManifestEntry `json:"entries"`

	extra  map[string]json.RawMessage
	opaque map[string]json.RawMessage // entries we could not parse
}

// Str returns a pointer to s, for Provenance fields.
func Str(s string) *string { return &s }

// marshal encodes v without HTML escaping (like Python's json), compact.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func cloneRaw(m map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m)+8)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func isNull(r json.RawMessage) bool { return string(bytes.TrimSpace(r)) == "null" }

func decodeField(m map[string]json.RawMessage, key string, dst any, required bool) error {
	r, ok := m[key]
	delete(m, key)
	if !ok {
		if required {
			return fmt.Errorf("missing field %q", key)
		}
		return nil
	}
	if err := json.Unmarshal(r, dst); err != nil {
		return fmt.Errorf("field %q: %v", key, err)
	}
	return nil
}

func decodeOptString(m map[string]json.RawMessage, key string, dst **string) error {
	r, ok := m[key]
	delete(m, key)
	if !ok || isNull(r) {
		*dst = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(r, &s); err != nil {
		return fmt.Errorf("field %q: %v", key, err)
	}
	*dst = &s
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (p *Provenance) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if m == nil {
		return errors.New("provenance is null")
	}
	var q Provenance
	if err := decodeField(m, "source", &q.Source, true); err != nil {
		return err
	}
	for _, f := range []struct {
		key string
		dst **string
	}{
		{"repo_id", &q.RepoID}, {"hf_filename", &q.HFFilename}, {"model_id", &q.ModelID},
		{"version_id", &q.VersionID}, {"url", &q.URL},
	} {
		if err := decodeOptString(m, f.key, f.dst); err != nil {
			return err
		}
	}
	if len(m) > 0 {
		q.extra = m
	}
	*p = q
	return nil
}

// MarshalJSON implements json.Marshaler.
func (p Provenance) MarshalJSON() ([]byte, error) {
	m := cloneRaw(p.extra)
	for _, f := range []struct {
		key string
		v   any
	}{
		{"source", p.Source}, {"repo_id", p.RepoID}, {"hf_filename", p.HFFilename},
		{"model_id", p.ModelID}, {"version_id", p.VersionID}, {"url", p.URL},
	} {
		b, err := marshal(f.v)
		if err != nil {
			return nil, err
		}
		m[f.key] = b
	}
	return marshal(m)
}

// UnmarshalJSON implements json.Unmarshaler. All of Scope's fields are required.
func (e *ManifestEntry) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if m == nil {
		return errors.New("entry is null")
	}
	var n ManifestEntry
	var added string
	if err := decodeField(m, "filename", &n.Filename, true); err != nil {
		return err
	}
	if r, ok := m["provenance"]; !ok || isNull(r) {
		return errors.New(`missing field "provenance"`)
	}
	if err := decodeField(m, "provenance", &n.Provenance, true); err != nil {
		return err
	}
	if err := decodeField(m, "sha256", &n.SHA256, true); err != nil {
		return err
	}
	if err := decodeField(m, "size_bytes", &n.SizeBytes, true); err != nil {
		return err
	}
	if err := decodeField(m, "added_at", &added, true); err != nil {
		return err
	}
	t, err := ParsePyTime(added)
	if err != nil {
		return fmt.Errorf(`field "added_at": %v`, err)
	}
	n.AddedAt = t
	if len(m) > 0 {
		n.extra = m
	}
	n.raw = append(json.RawMessage(nil), b...)
	if n.canon, err = n.fresh(); err != nil {
		return err
	}
	*e = n
	return nil
}

// fresh encodes the entry from its fields (known and unknown).
func (e ManifestEntry) fresh() ([]byte, error) {
	m := cloneRaw(e.extra)
	for _, f := range []struct {
		key string
		v   any
	}{
		{"filename", e.Filename}, {"provenance", e.Provenance}, {"sha256", e.SHA256},
		{"size_bytes", e.SizeBytes}, {"added_at", FormatPyTime(e.AddedAt)},
	} {
		b, err := marshal(f.v)
		if err != nil {
			return nil, err
		}
		m[f.key] = b
	}
	return marshal(m)
}

// MarshalJSON implements json.Marshaler. An entry read from disk and not
// changed since is emitted as it was read.
func (e ManifestEntry) MarshalJSON() ([]byte, error) {
	b, err := e.fresh()
	if err != nil {
		return nil, err
	}
	if e.raw != nil && bytes.Equal(b, e.canon) {
		return e.raw, nil
	}
	return b, nil
}

// unchanged reports whether the entry will be written back as read.
func (e ManifestEntry) unchanged() bool {
	if e.raw == nil {
		return false
	}
	b, err := e.fresh()
	return err == nil && bytes.Equal(b, e.canon)
}

// Validate checks the entry against what Scope's pydantic model requires,
// so that writing it cannot make Scope reject (and then discard) the manifest.
func (e ManifestEntry) Validate() error {
	if e.Filename == "" {
		return errors.New("manifest entry has no filename")
	}
	if filepath.IsAbs(e.Filename) || strings.HasPrefix(e.Filename, "/") {
		return fmt.Errorf("manifest entry %q: filename must be relative to the LoRA directory", e.Filename)
	}
	switch e.Provenance.Source {
	case SourceHuggingFace, SourceCivitAI, SourceURL, SourceLocal:
	default:
		return fmt.Errorf("manifest entry %q: provenance source %q is not one of huggingface, civitai, url, local", e.Filename, e.Provenance.Source)
	}
	if e.SizeBytes < 0 {
		return fmt.Errorf("manifest entry %q: negative size", e.Filename)
	}
	return nil
}

// NewManifest returns an empty manifest of version ManifestVersion.
func NewManifest() *Manifest {
	return &Manifest{Version: ManifestVersion, Entries: map[string]ManifestEntry{}}
}

// UnmarshalJSON implements json.Unmarshaler. Entries that do not parse are
// kept opaque and written back unchanged.
func (m *Manifest) UnmarshalJSON(b []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return err
	}
	if top == nil {
		return errors.New("manifest is null")
	}
	n := Manifest{Version: ManifestVersion, Entries: map[string]ManifestEntry{}}
	if r, ok := top["version"]; ok {
		if err := json.Unmarshal(r, &n.Version); err != nil || isNull(r) {
			return fmt.Errorf(`field "version" is not a string`)
		}
	}
	delete(top, "version")
	if r, ok := top["entries"]; ok && !isNull(r) {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(r, &raw); err != nil {
			return fmt.Errorf(`field "entries" is not an object`)
		}
		for k, v := range raw {
			var e ManifestEntry
			if err := json.Unmarshal(v, &e); err != nil {
				if n.opaque == nil {
					n.opaque = map[string]json.RawMessage{}
				}
				n.opaque[k] = v
				continue
			}
			n.Entries[k] = e
		}
	}
	delete(top, "entries")
	if len(top) > 0 {
		n.extra = top
	}
	*m = n
	return nil
}

// MarshalJSON implements json.Marshaler (compact, keys sorted).
func (m Manifest) MarshalJSON() ([]byte, error) {
	entries := cloneRaw(m.opaque)
	for k, e := range m.Entries {
		b, err := e.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("manifest entry %q: %w", k, err)
		}
		entries[k] = b
	}
	top := cloneRaw(m.extra)
	v := m.Version
	if v == "" {
		v = ManifestVersion
	}
	var err error
	if top["version"], err = marshal(v); err != nil {
		return nil, err
	}
	if top["entries"], err = marshal(entries); err != nil {
		return nil, err
	}
	return marshal(top)
}

func key(filename string) string { return filepath.ToSlash(filename) }

// Get returns the entry for filename.
func (m *Manifest) Get(filename string) (ManifestEntry, bool) {
	e, ok := m.Entries[key(filename)]
	return e, ok
}

// Set adds or replaces the entry for e.Filename (converted to a POSIX path).
// A zero AddedAt is set to the current time.
func (m *Manifest) Set(e ManifestEntry) {
	e.Filename = key(e.Filename)
	if e.AddedAt.IsZero() {
		e.AddedAt = time.Now().UTC()
	}
	if m.Entries == nil {
		m.Entries = map[string]ManifestEntry{}
	}
	delete(m.opaque, e.Filename)
	m.Entries[e.Filename] = e
}

// Remove deletes the entry for filename (parsed or not) and reports whether
// there was one.
func (m *Manifest) Remove(filename string) bool {
	k := key(filename)
	_, ok1 := m.Entries[k]
	_, ok2 := m.opaque[k]
	delete(m.Entries, k)
	delete(m.opaque, k)
	return ok1 || ok2
}

// Unparsed returns the sorted keys of entries that could not be parsed as
// Scope manifest entries; they are preserved as they are.
func (m *Manifest) Unparsed() []string {
	out := make([]string, 0, len(m.opaque))
	for k := range m.opaque {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Encode returns the manifest as written by Save: sorted keys, two-space
// indent, no HTML escaping, trailing newline. Entries that are new or changed
// are validated first.
func (m *Manifest) Encode() ([]byte, error) {
	for k, e := range m.Entries {
		if e.unchanged() {
			continue
		}
		if err := e.Validate(); err != nil {
			return nil, err
		}
		if k != e.Filename {
			return nil, fmt.Errorf("manifest entry key %q does not match its filename %q", k, e.Filename)
		}
	}
	b, err := m.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// LoadManifest reads <dir>/lora_manifest.json. A missing (or empty) file
// gives an empty manifest of version "1.0".
func LoadManifest(dir string) (*Manifest, error) {
	p := filepath.Join(dir, ManifestName)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return NewManifest(), nil
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return NewManifest(), nil
	}
	m := new(Manifest)
	if err := json.Unmarshal(b, m); err != nil {
		msg := err.Error()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			msg = fmt.Sprintf("%s (at byte %d)", msg, se.Offset)
		}
		msg = strings.Join(strings.Fields(msg), " ")
		return nil, fmt.Errorf("%s: %w: %s", p, ErrMalformedManifest, msg)
	}
	return m, nil
}

// Save atomically writes the manifest to <dir>/lora_manifest.json (temp file
// in dir, fsync, rename, fsync dir), keeping the existing file's permissions.
func (m *Manifest) Save(dir string) error {
	b, err := m.Encode()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p := filepath.Join(dir, ManifestName)
	perm := os.FileMode(0o644)
	if fi, err := os.Stat(p); err == nil {
		perm = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(dir, ".lora_manifest-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", p, err)
	}
	return atomicfile.SyncDir(dir)
}

// LockName is the advisory lock file UpdateManifest uses inside the LoRA dir.
const LockName = ".scopectl.lock"

// UpdateManifest serializes read-modify-write of <dir>/lora_manifest.json
// across goroutines and scopectl processes (advisory flock on
// <dir>/.scopectl.lock), loads the manifest, calls fn and saves the result.
// If fn returns an error nothing is written. fn must not call UpdateManifest
// for the same dir. Scope itself does not take the lock.
func UpdateManifest(dir string, fn func(*Manifest) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	m, err := LoadManifest(dir)
	if err != nil {
		return err
	}
	if err := fn(m); err != nil {
		return err
	}
	return m.Save(dir)
}
