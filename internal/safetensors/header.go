package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
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

// parser wraps the token stream with type-checked reads.
type parser struct{ dec *json.Decoder }

// token returns the next token; a decoder error means malformed JSON.
func (p *parser) token() (json.Token, error) {
	tok, err := p.dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, formatErr("header", "invalid JSON: %v", err)
	}
	return tok, nil
}

// delim consumes the delimiter d, or fails with a FormatError for field.
func (p *parser) delim(d json.Delim, field, msg string) error {
	tok, err := p.token()
	if err != nil {
		return err
	}
	if tok != d {
		return formatErr(field, "%s", msg)
	}
	return nil
}

// key reads an object key; the decoder guarantees it is a string.
func (p *parser) key() (string, error) {
	tok, err := p.token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", formatErr("header", "invalid JSON: object key is not a string")
	}
	return s, nil
}

// metadata reads the __metadata__ value: null or a flat string→string object.
func (p *parser) metadata() (map[string]string, error) {
	tok, err := p.token()
	if err != nil {
		return nil, err
	}
	if tok == nil { // null, which the reference implementation treats as absent
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, formatErr(metadataKey, "must be an object of string values")
	}
	md := make(map[string]string)
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		if _, dup := md[k]; dup {
			return nil, formatErr(metadataKey, "duplicate key %q", k)
		}
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		v, ok := tok.(string)
		if !ok {
			return nil, formatErr(metadataKey, "value of %q must be a string", k)
		}
		md[k] = v
	}
	return md, p.delim('}', metadataKey, "must be an object of string values")
}

// tensorFields are the fields every tensor entry must have, and the only ones.
var tensorFields = [...]string{"dtype", "shape", "data_offsets"}

// tensor reads one tensor entry and checks it on its own; checks that
// involve other tensors are in checkLayout.
func (p *parser) tensor(name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	if err := p.delim('{', name, "entry must be an object with dtype, shape and data_offsets"); err != nil {
		return t, err
	}
	var offs []int64
	var have [len(tensorFields)]bool
	for p.dec.More() {
		k, err := p.key()
		if err != nil {
			return t, err
		}
		i := slices.Index(tensorFields[:], k)
		if i < 0 {
			return t, formatErr(name, "unexpected field %q (want only dtype, shape, data_offsets)", k)
		}
		if have[i] {
			return t, formatErr(name, "field %q appears more than once", k)
		}
		have[i] = true
		switch k {
		case "dtype":
			tok, err := p.token()
			if err != nil {
				return t, err
			}
			s, ok := tok.(string)
			if !ok {
				return t, formatErr(name, "dtype must be a string")
			}
			if t.DType = DType(s); !t.DType.Valid() {
				return t, formatErr(name, "unknown dtype %q", s)
			}
		case "shape":
			if t.Shape, err = p.ints(name, k); err != nil {
				return t, err
			}
		case "data_offsets":
			if offs, err = p.ints(name, k); err != nil {
				return t, err
			}
			if len(offs) != 2 {
				return t, formatErr(name, "data_offsets must have exactly 2 entries, got %d", len(offs))
			}
		}
	}
	if err := p.delim('}', name, "entry must be an object"); err != nil {
		return t, err
	}
	for i, k := range tensorFields {
		if !have[i] {
			return t, formatErr(name, "missing field %q", k)
		}
	}
	t.Begin, t.End = offs[0], offs[1]
	if t.Begin > t.End {
		return t, formatErr(name, "data_offsets %s: begin is after end", fmtInts(offs))
	}
	want, ok := byteLen(t.Shape, t.DType)
	if !ok {
		return t, formatErr(name, "shape %s × %s overflows int64", fmtInts(t.Shape), t.DType)
	}
	if got := t.ByteLen(); got != want {
		return t, formatErr(name, "data_offsets %s length %d does not match shape %s × %s = %d bytes",
			fmtInts(offs), got, fmtInts(t.Shape), t.DType, want)
	}
	return t, nil
}

// ints reads a JSON array of non-negative integers that fit in int64.
func (p *parser) ints(name, field string) ([]int64, error) {
	if err := p.delim('[', name, field+" must be an array of non-negative integers"); err != nil {
		return nil, err
	}
	v := []int64{} // never nil, so a scalar's shape compares equal after a round trip
	for p.dec.More() {
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, formatErr(name, "%s must be an array of non-negative integers", field)
		}
		x, err := parseUint(string(num))
		if err != nil {
			return nil, formatErr(name, "%s entry %s: %v", field, num, err)
		}
		v = append(v, x)
	}
	return v, p.delim(']', name, field+" must be an array of non-negative integers")
}

// checkSurrogates rejects \u escapes that encode a lone UTF-16 surrogate.
// encoding/json turns them into U+FFFD, but the reference loader (serde_json)
// rejects the header, so accepting them would pass files Python cannot load.
// A backslash outside a string is a syntax error the decoder reports anyway,
// so a flat scan over the whole header is enough.
func checkSurrogates(js []byte) error {
	isLow := func(r int) bool { return r >= 0xDC00 && r <= 0xDFFF }
	for i := 0; i < len(js); i++ {
		if js[i] != '\\' {
			continue
		}
		start := i
		i++ // the escaped character, which may itself be a backslash
		if i == len(js) || js[i] != 'u' {
			continue
		}
		r := hex4(js[i+1 : min(i+5, len(js))])
		i += 4
		if isLow(r) {
			return formatErr("header", "lone UTF-16 surrogate in \\u escape at byte %d", start)
		}
		if r >= 0xD800 && r <= 0xDBFF { // must be followed by \uDC00-\uDFFF
			next := js[min(i+1, len(js)):min(i+7, len(js))]
			if len(next) < 6 || next[0] != '\\' || next[1] != 'u' || !isLow(hex4(next[2:])) {
				return formatErr("header", "lone UTF-16 surrogate in \\u escape at byte %d", start)
			}
			i += 6
		}
	}
	return nil
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) int {
	if len(b) != 4 {
		return -1
	}
	v := 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | int(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | int(c-'a'+10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | int(c-'A'+10)
		default:
			return -1
		}
	}
	return v
}

var errNotUint = errors.New("not a non-negative integer that fits in int64")

// parseUint accepts only plain digits: no sign, fraction or exponent, which
// serde (and so the reference loader) would reject for an unsigned integer.
func parseUint(s string) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, errNotUint
	}
	var x int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errNotUint
		}
		d := int64(c - '0')
		if x > (1<<63-1-d)/10 {
			return 0, errNotUint
		}
		x = x*10 + d
	}
	return x, nil
}
