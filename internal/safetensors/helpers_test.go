package safetensors

import (
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"reflect"
	"strings"
	"testing"
)

// stBytes builds a safetensors stream: length prefix, header JSON as given
// (no padding added), then dataLen zero bytes.
func stBytes(header string, dataLen int) []byte {
	b := make([]byte, 8, 8+len(header)+dataLen)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// wantFormatErr fails unless err is a *FormatError for field whose message
// contains msg.
func wantFormatErr(t *testing.T, err error, field, msg string) {
	t.Helper()
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("got error %v (%T), want *FormatError", err, err)
	}
	if fe.Field != field || !strings.Contains(fe.Msg, msg) {
		t.Fatalf("got FormatError{Field: %q, Msg: %q}, want Field %q and Msg containing %q", fe.Field, fe.Msg, field, msg)
	}
}

// countingReaderAt records every ReadAt made through it.
type countingReaderAt struct {
	r      io.ReaderAt
	calls  int
	bytes  int64
	maxEnd int64 // highest offset+len requested
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls++
	c.bytes += int64(len(p))
	c.maxEnd = max(c.maxEnd, off+int64(len(p)))
	return c.r.ReadAt(p, off)
}

// checkReencode checks that a parsed header survives HeaderBytes and a
// re-parse unchanged, i.e. that the writer can express whatever the reader
// accepts.
func checkReencode(t *testing.T, h *Header) {
	t.Helper()
	specs := make([]TensorSpec, len(h.Tensors))
	for i, ti := range h.Tensors {
		specs[i] = TensorSpec{Name: ti.Name, DType: ti.DType, Shape: ti.Shape}
	}
	hb, err := HeaderBytes(specs, h.Metadata)
	if err != nil {
		t.Fatalf("HeaderBytes of a parsed header: %v", err)
	}
	if len(hb)%8 != 0 {
		t.Fatalf("HeaderBytes length %d is not a multiple of 8", len(hb))
	}
	if n := binary.LittleEndian.Uint64(hb); n != uint64(len(hb)-8) {
		t.Fatalf("length prefix %d, want %d", n, len(hb)-8)
	}
	h2, err := ParseHeader(hb[8:], h.DataLen)
	if err != nil {
		t.Fatalf("re-parse of %q: %v", hb[8:], err)
	}
	if !reflect.DeepEqual(h.Tensors, h2.Tensors) {
		t.Fatalf("tensors changed on re-encode:\n got %+v\nwant %+v", h2.Tensors, h.Tensors)
	}
	if len(h.Metadata)+len(h2.Metadata) > 0 && !maps.Equal(h.Metadata, h2.Metadata) {
		t.Fatalf("metadata changed on re-encode: got %q, want %q", h2.Metadata, h.Metadata)
	}
}
