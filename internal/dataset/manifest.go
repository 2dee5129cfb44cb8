package dataset

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ManifestFile is one file of a dataset version: where it lies in the folder, its size
// and its sha256 (the blob that holds it in the library).
type ManifestFile struct {
	Path   string `json:"path"` // slash-separated, relative to the folder
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest lists the files of a dataset version. Its canonical form (Bytes) is one line
// per file, sorted by path: "path\x00size\x00sha256\n"; the sha256 of that form is the
// dataset's id, the hash `train run` records for a job's dataset, and the name of the
// folder it is sent to on the training machine. The same bytes under the same names give
// the same id, wherever they come from (a folder, or the library).
type Manifest struct {
	Files []ManifestFile `json:"files"`
}

// NewManifest sorts files by path into a manifest, refusing invalid or repeated entries.
func NewManifest(files []ManifestFile) (Manifest, error) {
	fs := append([]ManifestFile(nil), files...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
	for i, f := range fs {
		if err := f.valid(); err != nil {
			return Manifest{}, err
		}
		if i > 0 && fs[i-1].Path == f.Path {
			return Manifest{}, fmt.Errorf("manifest: %s: listed twice", f.Path)
		}
	}
	return Manifest{Files: fs}, nil
}

// Bytes is the canonical form.
func (m Manifest) Bytes() []byte {
	var b bytes.Buffer
	for _, f := range m.Files {
		b.WriteString(f.Path)
		b.WriteByte(0)
		b.WriteString(strconv.FormatInt(f.Size, 10))
		b.WriteByte(0)
		b.WriteString(f.SHA256)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// SHA256 is the dataset id: the sha256 of the canonical form.
func (m Manifest) SHA256() string {
	sum := sha256.Sum256(m.Bytes())
	return hex.EncodeToString(sum[:])
}

// TotalBytes sums the files' sizes.
func (m Manifest) TotalBytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Items counts the media files that train (those of ai-toolkit's extensions outside a
// _controls folder); the rest are captions, control images and other sidecars.
func (m Manifest) Items() (videos, images int) {
	for _, f := range m.Files {
		if path.Base(path.Dir(f.Path)) == "_controls" {
			continue
		}
		switch {
		case hasExt(f.Path, videoExts):
			videos++
		case hasExt(f.Path, imageExts):
			images++
		}
	}
	return videos, images
}

// maxManifestLine bounds one line of a manifest (a path of PATH_MAX, a size, a sha256).
const maxManifestLine = 4096 + 20 + 64 + 3

// ParseManifest reads the canonical form, strictly: every line complete, paths valid
// (relative, clean, no "..", no hidden or control-character names), sizes decimal without
// leading zeros, sha256s 64 lowercase hex digits, paths strictly increasing. What it
// accepts, Bytes gives back byte for byte.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	line := 0
	for len(b) > 0 {
		line++
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return Manifest{}, fmt.Errorf("manifest line %d: no newline at the end", line)
		}
		if i > maxManifestLine {
			return Manifest{}, fmt.Errorf("manifest line %d: longer than %d bytes", line, maxManifestLine)
		}
		fields := bytes.Split(b[:i], []byte{0})
		b = b[i+1:]
		if len(fields) != 3 {
			return Manifest{}, fmt.Errorf("manifest line %d: %d fields, want path, size and sha256 separated by NUL", line, len(fields))
		}
		f := ManifestFile{Path: string(fields[0]), SHA256: string(fields[2])}
		s := string(fields[1])
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || strconv.FormatInt(n, 10) != s {
			return Manifest{}, fmt.Errorf("manifest line %d: size %q: want a decimal number of bytes", line, s)
		}
		f.Size = n
		if err := f.valid(); err != nil {
			return Manifest{}, fmt.Errorf("manifest line %d: %w", line, err)
		}
		if k := len(m.Files); k > 0 && m.Files[k-1].Path >= f.Path {
			return Manifest{}, fmt.Errorf("manifest line %d: %s: paths must be sorted and unique", line, f.Path)
		}
		m.Files = append(m.Files, f)
	}
	return m, nil
}

func (f ManifestFile) valid() error {
	if err := ValidPath(f.Path); err != nil {
		return err
	}
	if f.Size < 0 {
		return fmt.Errorf("%s: negative size", f.Path)
	}
	if !ValidSHA256(f.SHA256) {
		return fmt.Errorf("%s: sha256 %q: want 64 lowercase hex digits", f.Path, f.SHA256)
	}
	return nil
}

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ValidPath checks a path a manifest may hold: relative, slash-separated and clean (no
// "", "." or ".." element, so that it can never name anything outside the folder it is
// materialized into), valid UTF-8 without control characters, and no hidden element
// (ai-toolkit never reads hidden files, so a dataset never stores one).
func ValidPath(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("%q: not valid UTF-8", p)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%q: control character in the name", p)
		}
	}
	if strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return fmt.Errorf("%q: not a clean relative path", p)
	}
	for _, el := range strings.Split(p, "/") {
		switch {
		case el == "..":
			return fmt.Errorf("%q: \"..\" in the path", p)
		case strings.HasPrefix(el, "."):
			return fmt.Errorf("%q: hidden name (ai-toolkit does not read it)", p)
		}
	}
	return nil
}
