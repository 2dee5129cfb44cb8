package civitai

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// isModelFile reports whether a file holds weights (not training data, a config, …).
func isModelFile(f FileInfo) bool {
	switch strings.ToLower(f.Type) {
	case "model", "pruned model", "":
		return true
	}
	return false
}

func isSafeTensor(f FileInfo) bool {
	if strings.EqualFold(f.Format, "SafeTensor") {
		return true
	}
	return f.Format == "" && strings.HasSuffix(strings.ToLower(f.Name), ".safetensors")
}

func isPickle(f FileInfo) bool {
	if strings.EqualFold(f.Format, "PickleTensor") {
		return true
	}
	n := strings.ToLower(f.Name)
	for _, ext := range []string{".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle"} {
		if strings.HasSuffix(n, ext) {
			return true
		}
	}
	return false
}

// primaryFile is the file CivitAI downloads by default: the primary one, else the first
// model file.
func primaryFile(v *Version) (FileInfo, bool) {
	for _, f := range v.Files {
		if f.Primary {
			return f, true
		}
	}
	for _, f := range v.Files {
		if isModelFile(f) {
			return f, true
		}
	}
	return FileInfo{}, false
}

// PrimarySafetensors picks the file to install: the primary file when it is a SafeTensor
// model file, else another SafeTensor model file of the version (or the file an AIR
// pinned). Pickle formats (.pt/.ckpt) are refused: loading them can run arbitrary code.
func (c *Client) PrimarySafetensors(v *Version) (FileInfo, error) {
	f, err := primarySafetensors(v)
	return f, c.guard(err)
}

func primarySafetensors(v *Version) (FileInfo, error) {
	if v == nil {
		return FileInfo{}, fmt.Errorf("civitai: no version: %w", ErrBadRef)
	}
	desc := fmt.Sprintf("version %d (%s %s)", v.ID, v.ModelName, v.Name)
	pickleErr := func(f FileInfo) error {
		return fmt.Errorf("civitai: %s offers %s only as a %s file, which can run arbitrary code when loaded; scopectl installs only .safetensors: ask the creator for a SafeTensor upload at %s: %w",
			desc, clip(f.Name), formatName(f), v.ModelPage, ErrUnsupported)
	}
	if v.PinnedFileID != 0 {
		for _, f := range v.Files {
			if f.ID != v.PinnedFileID {
				continue
			}
			if isSafeTensor(f) && !isPickle(f) {
				return f, nil
			}
			if isPickle(f) {
				return FileInfo{}, pickleErr(f)
			}
			return FileInfo{}, fmt.Errorf("civitai: %s: the pinned file %s is a %s file, not SafeTensor: %w", desc, clip(f.Name), formatName(f), ErrUnsupported)
		}
		return FileInfo{}, fmt.Errorf("civitai: %s has no public file %d: %w", desc, v.PinnedFileID, ErrNotFound)
	}
	prim, ok := primaryFile(v)
	if ok && isModelFile(prim) && isSafeTensor(prim) && !isPickle(prim) {
		return prim, nil
	}
	for _, f := range v.Files {
		if isModelFile(f) && isSafeTensor(f) && !isPickle(f) {
			return f, nil
		}
	}
	if ok && isPickle(prim) {
		return FileInfo{}, pickleErr(prim)
	}
	if ok {
		return FileInfo{}, fmt.Errorf("civitai: %s has no SafeTensor model file (its primary file %s is %s): %w", desc, clip(prim.Name), formatName(prim), ErrUnsupported)
	}
	return FileInfo{}, fmt.Errorf("civitai: %s has no downloadable model file: %w", desc, ErrNotFound)
}

func formatName(f FileInfo) string {
	if f.Format != "" {
		return clip(f.Format)
	}
	return "unknown-format"
}

// maxFileName is the longest file name scopectl accepts (most file systems allow 255
// bytes; ".incomplete.parts" must still fit).
const maxFileName = 200

// SanitizeFileName checks an untrusted file name from CivitAI (API or Content-Disposition)
// and returns the name to create in the target directory. It refuses traversal (".."),
// absolute paths, control and bidi characters and names that are not *.safetensors; a
// harmless directory prefix ("loras/x.safetensors") is stripped; characters Windows
// forbids are replaced by '_'.
func SanitizeFileName(raw string) (string, error) {
	refuse := func(why string) (string, error) {
		return "", fmt.Errorf("civitai: refusing the file name %q from CivitAI: %s: %w", clip(raw), why, ErrUnsafe)
	}
	if raw == "" {
		return refuse("empty")
	}
	if len(raw) > 1024 {
		return refuse("too long")
	}
	if !utf8.ValidString(raw) {
		return refuse("not valid UTF-8")
	}
	for _, r := range raw {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029' || r == '\ufeff' {
			return refuse("control characters")
		}
	}
	s := strings.ReplaceAll(raw, "\\", "/")
	if strings.HasPrefix(s, "/") || len(s) >= 2 && s[1] == ':' {
		return refuse("absolute path")
	}
	for _, seg := range strings.Split(s, "/") {
		if strings.TrimSpace(seg) == ".." {
			return refuse("path traversal")
		}
	}
	name := path.Base(s)
	name = strings.TrimLeft(strings.TrimSpace(name), ". ")
	name = strings.TrimRight(name, ". ")
	name = strings.Map(func(r rune) rune {
		switch r {
		case '<', '>', ':', '"', '|', '?', '*', '/':
			return '_'
		}
		return r
	}, name)
	if !strings.HasSuffix(strings.ToLower(name), ".safetensors") {
		return refuse("not a .safetensors file")
	}
	stem := name[:len(name)-len(".safetensors")]
	if strings.Trim(stem, " ._-") == "" {
		return refuse("no name before .safetensors")
	}
	if len(name) > maxFileName {
		// keep the extension, cut the stem on a rune boundary
		cut := maxFileName - len(".safetensors")
		for cut > 0 && !utf8.RuneStart(stem[cut]) {
			cut--
		}
		name = stem[:cut] + name[len(stem):]
	}
	if reservedWindowsName(stem) {
		name = "_" + name
	}
	return name, nil
}

func reservedWindowsName(stem string) bool {
	s := strings.ToUpper(stem)
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s = s[:i]
	}
	switch s {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if len(s) == 4 && (strings.HasPrefix(s, "COM") || strings.HasPrefix(s, "LPT")) && s[3] >= '0' && s[3] <= '9' {
		return true
	}
	return false
}
