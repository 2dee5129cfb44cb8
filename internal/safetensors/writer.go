package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// copyBufSize is the Writer's fixed copy buffer; memory use does not depend
// on tensor sizes.
const copyBufSize = 256 << 10

// TensorSpec declares one tensor for a Writer.
type TensorSpec struct {
	Name  string
	DType DType
	Shape []int64
}

// Writer streams a safetensors file. The header is computed up front from the
// specs (in the order given; offsets laid out consecutively) and written by
// NewWriter; each tensor's bytes are then copied through in the same order, so
// a multi-gigabyte file never has to be held in memory.
type Writer struct {
	w      io.Writer
	names  []string
	lens   []int64
	next   int    // index of the next tensor to write
	buf    []byte // reused by every WriteTensor
	err    error  // sticky: set once the output may be partially written
	closed bool
}

// NewWriter validates specs (unique names, valid dtypes, no overflow) and
// metadata, and writes the header to w.
func NewWriter(w io.Writer, specs []TensorSpec, metadata map[string]string) (*Writer, error) {
	hdr, lens, err := encodeHeader(specs, metadata)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, fmt.Errorf("safetensors: writing header: %w", err)
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return &Writer{w: w, names: names, lens: lens}, nil
}

// WriteTensor copies exactly the tensor's byte length from r. Tensors must be
// written in spec order; a name out of order is an error that writes nothing.
// A short r or a write error leaves the output truncated, so it sticks: all
// later calls return it.
func (w *Writer) WriteTensor(name string, r io.Reader) error {
	switch {
	case w.err != nil:
		return w.err
	case w.closed:
		return errors.New("safetensors: WriteTensor after Close")
	case w.next == len(w.names):
		return fmt.Errorf("safetensors: WriteTensor(%q): all %d tensors already written", name, len(w.names))
	case name != w.names[w.next]:
		return fmt.Errorf("safetensors: WriteTensor(%q) out of order: next tensor is %q", name, w.names[w.next])
	}
	if w.buf == nil {
		w.buf = make([]byte, copyBufSize)
	}
	want := w.lens[w.next]
	n, err := io.CopyBuffer(w.w, io.LimitReader(r, want), w.buf)
	if err == nil && n < want {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		w.err = fmt.Errorf("safetensors: tensor %q: copied %d of %d bytes: %w", name, n, want, err)
		return w.err
	}
	w.next++
	return nil
}

// Close checks that every tensor was written. It does not close the
// underlying writer, which the caller may still need to sync or rename.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	w.closed = true
	if w.next < len(w.names) {
		return fmt.Errorf("safetensors: Close with %d of %d tensors unwritten, starting at %q",
			len(w.names)-w.next, len(w.names), w.names[w.next])
	}
	return nil
}

// HeaderBytes returns the 8+N byte prefix a Writer would write for specs.
func HeaderBytes(specs []TensorSpec, metadata map[string]string) ([]byte, error) {
	hdr, _, err := encodeHeader(specs, metadata)
	return hdr, err
}

// encodeHeader builds the length prefix and compact JSON header, metadata
// first (keys sorted, for reproducible output) then tensors in spec order. It
// pads with spaces so 8+N is a multiple of 8, as the Python writer does,
// which keeps the data buffer aligned for memory-mapped loaders.
func encodeHeader(specs []TensorSpec, metadata map[string]string) ([]byte, []int64, error) {
	b := make([]byte, 8, 8+64*len(specs)+64)
	b = append(b, '{')
	if len(metadata) > 0 {
		b = appendString(b, metadataKey)
		b = append(b, ":{"...)
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			v := metadata[k]
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, nil, formatErr(metadataKey, "key %q or its value is not valid UTF-8", k)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, v)
		}
		b = append(b, '}')
	}
	lens := make([]int64, len(specs))
	seen := make(map[string]bool, len(specs))
	var off int64
	for i, s := range specs {
		switch {
		case s.Name == metadataKey:
			return nil, nil, formatErr(s.Name, "name is reserved for metadata")
		case !utf8.ValidString(s.Name):
			return nil, nil, formatErr(s.Name, "name is not valid UTF-8")
		case seen[s.Name]:
			return nil, nil, formatErr(s.Name, "duplicate tensor name")
		case !s.DType.Valid():
			return nil, nil, formatErr(s.Name, "unknown dtype %q", s.DType)
		}
		seen[s.Name] = true
		n, ok := byteLen(s.Shape, s.DType)
		if !ok {
			return nil, nil, formatErr(s.Name, "shape %s × %s is negative or overflows int64", fmtInts(s.Shape), s.DType)
		}
		if off > math.MaxInt64-n {
			return nil, nil, formatErr(s.Name, "data buffer size overflows int64")
		}
		lens[i] = n
		if len(metadata) > 0 || i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s.Name)
		b = append(b, `:{"dtype":`...)
		b = appendString(b, string(s.DType))
		b = append(b, `,"shape":[`...)
		for j, d := range s.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, `],"data_offsets":[`...)
		b = strconv.AppendInt(b, off, 10)
		off += n
		b = append(b, ',')
		b = strconv.AppendInt(b, off, 10)
		b = append(b, "]}"...)
	}
	b = append(b, '}')
	for len(b)%8 != 0 {
		b = append(b, ' ')
	}
	n := len(b) - 8
	if n > MaxHeaderSize {
		return nil, nil, formatErr("header", "length %d exceeds the maximum of %d", n, MaxHeaderSize)
	}
	binary.LittleEndian.PutUint64(b, uint64(n))
	return b, lens, nil
}

// appendString appends s (valid UTF-8) as a JSON string. Unlike
// encoding/json it does not escape <, > and &, and it uses the short escapes,
// so re-encoding a parsed header never makes it longer.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		default:
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}
