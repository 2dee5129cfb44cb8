package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// Header is a parsed and validated safetensors header.
type Header struct {
	Metadata  map[string]string // nil when absent
	Tensors   []TensorInfo      // sorted by Begin, then End, then Name
	HeaderLen int64             // N, the JSON length including padding
	DataLen   int64             // file size - 8 - N

	index map[string]int // name → position in Tensors, built by ParseHeader
}

// DataStart returns the file offset of the data buffer.
func (h *Header) DataStart() int64 { return 8 + h.HeaderLen }

// Lookup returns the tensor with the given name.
func (h *Header) Lookup(name string) (TensorInfo, bool) {
	if h.index == nil { // a Header built by hand rather than parsed
		for _, t := range h.Tensors {
			if t.Name == name {
				return t, true
			}
		}
		return TensorInfo{}, false
	}
	i, ok := h.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return h.Tensors[i], true
}

// Names returns the tensor names in sorted order.
func (h *Header) Names() []string {
	names := make([]string, len(h.Tensors))
	for i, t := range h.Tensors {
		names[i] = t.Name
	}
	slices.Sort(names)
	return names
}

// ReadHeader reads and validates the header of a safetensors stream of the
// given total size. It reads exactly two times: 8 bytes, then N bytes. It does
// not read the data buffer, so validating a large file costs only its header.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	if size < 8 {
		return nil, formatErr("header", "file is %d bytes, too short for the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if err := readFullAt(r, lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	// Both checks come before the allocation: n is untrusted.
	if n > MaxHeaderSize {
		return nil, formatErr("header", "length %d exceeds the maximum of %d", n, MaxHeaderSize)
	}
	if n > uint64(size-8) {
		return nil, formatErr("header", "length %d exceeds the %d bytes after the length prefix", n, size-8)
	}
	if n == 0 {
		return nil, formatErr("header", "empty; it must be a JSON object starting with '{'")
	}
	js := make([]byte, n)
	if err := readFullAt(r, js, 8); err != nil {
		return nil, fmt.Errorf("safetensors: reading %d-byte header: %w", n, err)
	}
	return ParseHeader(js, size-8-int64(n))
}

// readFullAt is one ReadAt call; the io.ReaderAt contract makes it fill p or
// fail, so no loop is needed (and the read count stays predictable).
func readFullAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ParseHeader validates raw header JSON (the N bytes after the length prefix,
// padding included) against a data buffer of dataLen bytes.
//
// The JSON is walked token by token rather than unmarshalled into a map
// because encoding/json silently keeps the last of duplicate keys, and a
// duplicate tensor name would make two loaders disagree about the file.
// Every value's type is checked as soon as its first token is seen, so no
// input can make the walk recurse or buffer more than the header itself.
func ParseHeader(js []byte, dataLen int64) (*Header, error) {
	if dataLen < 0 {
		return nil, formatErr("header", "negative data length %d", dataLen)
	}
	if len(js) > MaxHeaderSize {
		return nil, formatErr("header", "length %d exceeds the maximum of %d", len(js), MaxHeaderSize)
	}
	if len(js) == 0 || js[0] != '{' {
		return nil, formatErr("header", "must be a JSON object starting with '{'")
	}
	// The decoder would silently replace invalid UTF-8 with U+FFFD.
	if !utf8.Valid(js) {
		return nil, formatErr("header", "not valid UTF-8")
	}
	if err := checkSurrogates(js); err != nil {
		return nil, err
	}
	p := parser{dec: json.NewDecoder(bytes.NewReader(js))}
	p.dec.UseNumber()

	h := &Header{HeaderLen: int64(len(js)), DataLen: dataLen}
	if err := p.delim('{', "header", "must be a JSON object"); err != nil {
		return nil, err
	}
	seen := make(map[string]bool)
	for p.dec.More() {
		name, err := p.key()
		if err != nil {
			return nil, err
		}
		if seen[name] {
			if name == metadataKey {
				return nil, formatErr(metadataKey, "appears more than once")
			}
			return nil, formatErr(name, "duplicate tensor name")
		}
		seen[name] = true
		if name == metadataKey {
			if h.Metadata, err = p.metadata(); err != nil {
				return nil, err
			}
			continue
		}
		t, err := p.tensor(name)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, t)
	}
	if err := p.delim('}', "header", "must be a JSON object"); err != nil {
		return nil, err
	}
	// Only whitespace (normally the space padding) may follow the object.
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, formatErr("header", "unexpected data after the header JSON object")
	}
	if err := h.checkLayout(); err != nil {
		return nil, err
	}
	h.index = make(map[string]int, len(h.Tensors))
	for i, t := range h.Tensors {
		h.index[t.Name] = i
	}
	return h, nil
}

// checkLayout sorts the tensors and checks that their byte ranges tile the
// data buffer exactly: no holes (bytes a loader would ignore), no overlaps
// (two tensors aliasing the same bytes), nothing past the end.
func (h *Header) checkLayout() error {
	// End breaks ties between a zero-size tensor and a non-empty one
	// starting at the same offset; the empty one must come first.
	slices.SortFunc(h.Tensors, func(a, b TensorInfo) int {
		return cmp.Or(cmp.Compare(a.Begin, b.Begin), cmp.Compare(a.End, b.End), cmp.Compare(a.Name, b.Name))
	})
	var pos int64
	for i, t := range h.Tensors {
		offs := func() string { return fmtInts([]int64{t.Begin, t.End}) } // only on error
		switch {
		case t.End > h.DataLen:
			return formatErr(t.Name, "data_offsets %s extend past the end of the %d-byte data buffer", offs(), h.DataLen)
		case t.Begin > pos:
			return formatErr(t.Name, "data_offsets %s leave bytes [%d,%d) of the data buffer uncovered", offs(), pos, t.Begin)
		case t.Begin < pos:
			prev := h.Tensors[i-1] // pos > 0 only after a tensor
			return formatErr(t.Name, "data_offsets %s overlap tensor %q at %s", offs(), prev.Name, fmtInts([]int64{prev.Begin, prev.End}))
		}
		pos = t.End
	}
	if pos != h.DataLen {
		return formatErr("header", "tensors cover %d bytes but the data buffer has %d; trailing bytes belong to no tensor", pos, h.DataLen)
	}
	return nil
}
