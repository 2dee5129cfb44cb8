package library

import (
	"context"
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
	"github.com/daydreamlive/scopectl/internal/store"
)

// OwnedName is scopectl's record, inside a LoRA folder, of the files it put there: the one
// record of ownership, for Scope's LoRA dir on this machine (lora install) and for remote
// folders (sync) alike. It lives in the folder because it must travel with it: the library
// index on this machine does not reach a pod. A dot name ending in neither .safetensors
// nor .json: Scope ignores it.
//
// An older scopectl recorded local installs in the library index instead (store.Install);
// a folder that has only that record is read through it and migrated into this file the
// next time scopectl writes to the folder (internal/lorasync).
const OwnedName = ".scopectl-owned"

// Owned is the ownership record's content.
type Owned struct {
	Version int                  `json:"version"`
	Files   map[string]OwnedFile `json:"files"`
}

// OwnedFile is one file scopectl put into the folder.
type OwnedFile struct {
	SHA256       string    `json:"sha256"` // of the file as scopectl wrote it
	Size         int64     `json:"size"`
	SourceSHA256 string    `json:"source_sha256"` // the library entry it was made from
	Name         string    `json:"name"`          // that entry's name
	SyncedAt     time.Time `json:"synced_at"`
	Form         string    `json:"form,omitempty"`     // as-is | diffusion_model | bare+alpha
	Pipeline     string    `json:"pipeline,omitempty"` // the --pipeline it was checked against
}

// NewOwned is an empty record.
func NewOwned() *Owned { return &Owned{Version: 1, Files: map[string]OwnedFile{}} }

// ParseOwned decodes a record read from where (named in the error).
func ParseOwned(b []byte, where string) (*Owned, error) {
	o := NewOwned()
	if err := json.Unmarshal(b, o); err != nil || o.Files == nil {
		return nil, fmt.Errorf("%s on %s is damaged (expected a JSON object with \"files\"); move it away to start over", OwnedName, where)
	}
	for name := range o.Files {
		// The record names files in its own folder, never a path elsewhere: a record that
		// does (edited by hand, or by someone on the far side) is not trusted at all.
		if name == "" || name == "." || name == ".." || name == OwnedName || strings.ContainsAny(name, "/\\\x00") {
			return nil, fmt.Errorf("%s on %s is damaged: %q is not a file name in the folder; move it away to start over", OwnedName, where, name)
		}
	}
	return o, nil
}

// Encode is the record as written to a folder.
func (o *Owned) Encode() ([]byte, error) { return json.MarshalIndent(o, "", "  ") }

// ReadOwned reads the record of the local folder dir; a folder without one has an empty
// record.
func ReadOwned(dir string) (*Owned, error) {
	b, err := os.ReadFile(filepath.Join(dir, OwnedName))
	if errors.Is(err, fs.ErrNotExist) {
		return NewOwned(), nil
	}
	if err != nil {
		return nil, err
	}
	return ParseOwned(b, dir)
}

// WriteOwned writes the record of the local folder dir atomically.
func WriteOwned(dir string, o *Owned) error {
	b, err := o.Encode()
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, OwnedName), b, 0o644)
}

// Install returns the record of file in dir as the library's install row (lora show, the
// page, scan).
func (f OwnedFile) Install(dir, file string) store.Install {
	return store.Install{Dir: dir, File: file, Name: f.Name, SourceSHA256: f.SourceSHA256, SHA256: f.SHA256,
		Size: f.Size, Form: f.Form, Pipeline: f.Pipeline, InstalledAt: f.SyncedAt}
}

// OwnedFromInstall is an older scopectl's install row as a record entry.
func OwnedFromInstall(in store.Install) OwnedFile {
	return OwnedFile{SHA256: in.SHA256, Size: in.Size, SourceSHA256: in.SourceSHA256, Name: in.Name,
		SyncedAt: in.InstalledAt, Form: in.Form, Pipeline: in.Pipeline}
}

// installDirsName lists, in the data dir, the local folders scopectl has written an
// ownership record into: where `lora show` and the page look for installs. It says only
// where to look; which files scopectl owns is in each folder's record.
const installDirsName = "install-dirs.json"

func (l *Library) installDirsPath() string {
	return filepath.Join(filepath.Dir(l.BlobDir), installDirsName)
}

func (l *Library) installDirs() []string {
	var dirs []string
	if b, err := os.ReadFile(l.installDirsPath()); err == nil {
		_ = json.Unmarshal(b, &dirs) // a damaged list only hides installs from lora show
	}
	return dirs
}

// NoteInstallDir remembers that the local folder dir holds an ownership record. Best
// effort: the list only tells lora show where to look.
func (l *Library) NoteInstallDir(dir string) {
	if l.BlobDir == "" { // no data dir to keep the list in
		return
	}
	dirs := l.installDirs()
	for _, d := range dirs {
		if d == dir {
			return
		}
	}
	dirs = append(dirs, dir)
	sort.Strings(dirs)
	b, err := json.MarshalIndent(dirs, "", "  ")
	if err != nil {
		return
	}
	_ = os.MkdirAll(filepath.Dir(l.installDirsPath()), 0o755)
	_ = atomicfile.WriteFile(l.installDirsPath(), b, 0o644)
}

// Installs lists the files scopectl put into local LoRA folders, read from the ownership
// record of each folder it wrote one into, of each extra folder named (such as Scope's
// LoRA dir), and, for folders an older scopectl installed into and nothing has written to
// since, from the library index. Ordered by dir, file.
func (l *Library) Installs(ctx context.Context, extra ...string) ([]store.Install, error) {
	legacy, err := l.Store.ListInstalls(ctx, "")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var dirs []string
	add := func(d string) {
		if d == "" {
			return
		}
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	for _, d := range extra {
		add(d)
	}
	for _, d := range l.installDirs() {
		add(d)
	}
	for _, in := range legacy {
		add(in.Dir)
	}
	out := []store.Install{}
	owned := map[string]bool{} // dir/file in a folder's record
	for _, d := range dirs {
		o, err := ReadOwned(d)
		if err != nil {
			continue // a damaged record is reported by the command that writes there
		}
		for file, f := range o.Files {
			owned[filepath.Join(d, file)] = true
			out = append(out, f.Install(d, file))
		}
	}
	for _, in := range legacy {
		if !owned[filepath.Join(in.Dir, in.File)] {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Dir != out[j].Dir {
			return out[i].Dir < out[j].Dir
		}
		return out[i].File < out[j].File
	})
	return out, nil
}

// FileSHA256 returns the sha256 of the local file at path: the recorded one while the
// file keeps the size, mtime and inode it had when scopectl last read it, else by reading
// it (and recording what it read).
func (l *Library) FileSHA256(ctx context.Context, path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	sha, _, err := l.fileSHA(ctx, path, filepath.Base(path), fi)
	return sha, err
}
