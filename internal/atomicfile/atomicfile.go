// Package atomicfile writes files so that readers only ever see either the
// old content or the complete new content at the final name.
//
// Content is written to a dot-prefixed temporary file next to the target,
// named "."+base+".scopectl-tmp-<random>". The name starts with a dot and ends
// in neither ".safetensors" nor ".json", so Scope's LoRA loader and lister
// ignore it even if a crash leaves it behind. Commit fsyncs the file, renames
// it over the target and fsyncs the directory.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// TempMarker is the part of a temporary file's name that identifies it as
// one of ours: "."+base+TempMarker+<random hex>.
const TempMarker = ".scopectl-tmp-"

// File is a temporary file that becomes dir/name on Commit.
// Write to it through the embedded *os.File; do not Close it yourself.
type File struct {
	*os.File
	final string
	done  bool // committed or aborted
}

// Create returns a new temporary file in the directory of dir/name (name may
// contain slashes, e.g. "sub/x.safetensors"). The directory must exist.
// perm is used for the new file (subject to umask, like os.WriteFile).
func Create(dir, name string, perm os.FileMode) (*File, error) {
	final := filepath.Join(dir, filepath.FromSlash(name))
	tdir, base := filepath.Split(final)
	if base == "" || base == "." || base == ".." {
		return nil, fmt.Errorf("atomicfile: invalid file name %q", name)
	}
	if tdir == "" {
		tdir = "."
	}
	for range 100 {
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, err
		}
		tmp := filepath.Join(tdir, "."+base+TempMarker+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &File{File: f, final: final}, nil
	}
	return nil, fmt.Errorf("atomicfile: could not create a unique temporary file in %s", tdir)
}

// IsTemp reports whether a base file name looks like a temporary file made
// by Create (for example one left behind by a killed process).
func IsTemp(name string) bool {
	name = filepath.Base(name)
	i := strings.LastIndex(name, TempMarker)
	return strings.HasPrefix(name, ".") && i > 0 && len(name) > i+len(TempMarker)
}

// Final returns the path the file will have after Commit.
func (f *File) Final() string { return f.final }

// Commit fsyncs and closes the temporary file, renames it to its final name
// and fsyncs the directory. On failure the temporary file is removed.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: Commit after Commit or Abort")
	}
	f.done = true
	tmp := f.File.Name()
	if err := f.File.Sync(); err != nil {
		f.File.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.File.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, f.final); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(f.final))
}

// Abort closes and removes the temporary file. It is a no-op after Commit
// or a previous Abort.
func (f *File) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	f.File.Close()
	if err := os.Remove(f.File.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// WriteFile atomically replaces path with data.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(filepath.Dir(path), filepath.Base(path), perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}

// SyncDir fsyncs a directory so that a rename or create in it is durable.
// It is a no-op on Windows and on file systems that do not support
// fsync on directories.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}
