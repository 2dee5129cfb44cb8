package train

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/safetensors"
)

// errIncomplete means a checkpoint file is not (yet) a whole safetensors file.
var errIncomplete = errors.New("not a complete safetensors file")

// checkComplete reports whether f holds a whole safetensors file: its header parses
// and the file ends exactly where the header's last tensor ends. ai-toolkit writes
// saves in place (safetensors.save_file to the final name), so a file being written,
// or cut short by a kill, fails this.
func checkComplete(f *os.File) (*safetensors.Header, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := fi.Size()
	h, err := safetensors.ReadHeader(f, size)
	if err != nil {
		return nil, size, fmt.Errorf("%w: %v", errIncomplete, err)
	}
	var end int64
	for _, t := range h.Tensors {
		end = max(end, t.End)
	}
	if h.DataStart()+end != size {
		return nil, size, fmt.Errorf("%w: %d bytes, the header describes %d", errIncomplete, size, h.DataStart()+end)
	}
	return h, size, nil
}

// CheckFile reports whether the file at path is a complete safetensors file.
func CheckFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, err = checkComplete(f)
	return err
}

// trainingStep reads training_info.step from a save's metadata (-1 if absent).
func trainingStep(h *safetensors.Header) int {
	raw, ok := h.Metadata["training_info"]
	if !ok {
		return -1
	}
	var ti struct {
		Step json.RawMessage `json:"step"`
	}
	if json.Unmarshal([]byte(raw), &ti) != nil {
		return -1
	}
	var n int
	if json.Unmarshal(ti.Step, &n) == nil {
		return n
	}
	var s string
	if json.Unmarshal(ti.Step, &s) == nil {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	return -1
}

// copyVerified copies src to dst (atomically, a copy: never a link, which would change
// the original's ctime and with it the checkpoint ai-toolkit resumes from) and returns
// the size and sha256. It fails if src changed while it was read.
func copyVerified(src, dst string) (size int64, sum string, h *safetensors.Header, err error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, "", nil, err
	}
	defer f.Close()
	h, size, err = checkComplete(f)
	if err != nil {
		return 0, "", nil, err
	}
	before, err := f.Stat()
	if err != nil {
		return 0, "", nil, err
	}
	out, err := atomicfile.Create(filepath.Dir(dst), filepath.Base(dst), 0o644)
	if err != nil {
		return 0, "", nil, err
	}
	defer out.Abort()
	hs := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, hs), io.NewSectionReader(f, 0, size))
	if err != nil {
		return 0, "", nil, err
	}
	after, err := os.Stat(src)
	if err != nil {
		return 0, "", nil, err // pruned while copied
	}
	if n != size || after.Size() != size || !after.ModTime().Equal(before.ModTime()) || !os.SameFile(before, after) {
		return 0, "", nil, fmt.Errorf("%s changed while it was copied", filepath.Base(src))
	}
	if err := out.Commit(); err != nil {
		return 0, "", nil, err
	}
	return size, hex.EncodeToString(hs.Sum(nil)), h, nil
}

// copyFile copies src to dst through a temporary name (a fresh inode: its ctime is now).
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := atomicfile.Create(filepath.Dir(dst), filepath.Base(dst), perm)
	if err != nil {
		return err
	}
	defer out.Abort()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Commit()
}

// FileSHA256 hashes a file.
func FileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
