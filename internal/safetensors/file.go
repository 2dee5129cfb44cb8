package safetensors

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// maxReadTensor caps ReadTensor, which holds a whole tensor in memory.
const maxReadTensor = 64 << 20

// File is an open safetensors file whose header has been validated.
type File struct {
	Header *Header
	Path   string

	f *os.File
}

// Open opens path and validates its header. Files that are PyTorch pickle or
// zip checkpoints (.pt, .ckpt, .bin) are refused with an error saying so,
// since "invalid header length" would not tell the user what went wrong.
// Errors are prefixed with the path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	h, err := openHeader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{Header: h, Path: path, f: f}, nil
}

func openHeader(f *os.File) (*Header, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, formatErr("file", "is a directory, not a safetensors file (name the .safetensors files in it)")
	}
	var prefix [9]byte
	n, _ := f.ReadAt(prefix[:], 0)
	if kind := torchKind(prefix[:n]); kind != "" {
		return nil, formatErr("file", "this is a PyTorch %s checkpoint (.pt/.ckpt/.bin), not safetensors: refused, because pickle can run code in any loader that does not restrict it, and Scope hands every non-.safetensors file to torch.load and never lists it; only safetensors are accepted (convert it with safetensors.torch.save_file on a trusted machine)", torchKindName(kind))
	}
	// Every safetensors file has its JSON header's '{' at byte 8. Without it the file is
	// something else (text, an image, a truncated download), and the length prefix read
	// from its first bytes would only produce a meaningless number.
	if n == len(prefix) && prefix[8] != '{' {
		return nil, formatErr("file", "not a safetensors file (no JSON header after the 8-byte length prefix; it starts with %q)", printablePrefix(prefix[:]))
	}
	return ReadHeader(f, st.Size())
}

// printablePrefix shows the first bytes of a file, non-printing bytes as '.'.
func printablePrefix(p []byte) string {
	b := make([]byte, len(p))
	for i, c := range p {
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		b[i] = c
	}
	return string(b)
}

func torchKindName(kind string) string {
	if kind == "zip" {
		return "zip (pickle inside)"
	}
	return kind
}

// torchKind reports whether the first bytes of a file look like a pickle
// ("pickle") or zip ("zip") checkpoint. A safetensors file always has '{' at
// offset 8, and its first bytes are a length that may happen to equal a magic
// number (N = 640 begins 0x80 0x02), so '{' there rules the match out.
func torchKind(p []byte) string {
	if len(p) >= 9 && p[8] == '{' {
		return ""
	}
	switch {
	case bytes.HasPrefix(p, []byte("PK\x03\x04")):
		return "zip"
	case len(p) >= 2 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5: // PROTO opcode, protocol 2-5
		return "pickle"
	}
	return ""
}

// Tensor returns a reader over the raw bytes of the named tensor.
func (f *File) Tensor(name string) (*io.SectionReader, error) {
	t, ok := f.Header.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: no tensor %q", f.Path, name)
	}
	return io.NewSectionReader(f.f, f.Header.DataStart()+t.Begin, t.ByteLen()), nil
}

// ReadTensor returns the raw bytes of the named tensor. It is meant for small
// tensors and refuses ones over 64 MiB; stream larger ones with Tensor.
func (f *File) ReadTensor(name string) ([]byte, error) {
	sr, err := f.Tensor(name)
	if err != nil {
		return nil, err
	}
	if sr.Size() > maxReadTensor {
		return nil, fmt.Errorf("safetensors: %s: tensor %q is %d bytes, over the %d-byte ReadTensor limit; use Tensor to stream it",
			f.Path, name, sr.Size(), maxReadTensor)
	}
	buf := make([]byte, sr.Size())
	if _, err := io.ReadFull(sr, buf); err != nil {
		return nil, fmt.Errorf("safetensors: %s: reading tensor %q: %w", f.Path, name, err)
	}
	return buf, nil
}

// Close closes the underlying file.
func (f *File) Close() error { return f.f.Close() }
