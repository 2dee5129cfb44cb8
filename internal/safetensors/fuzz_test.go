package safetensors

import (
	"bytes"
	"errors"
	"testing"
)

// The seed corpora live in testdata/fuzz/Fuzz*/; the f.Add seeds below cover
// the basic shapes so the fuzzers start from valid files even without them.

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(`{}`), int64(0))
	f.Add([]byte(`{"__metadata__":{"format":"pt"},`+f32("a", "[2,3]", 0, 24)+`,`+f32("e", "[0]", 24, 24)+`}  `), int64(24))
	f.Add([]byte(`{"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}}`), int64(2))
	f.Fuzz(func(t *testing.T, js []byte, dataLen int64) {
		h, err := ParseHeader(js, dataLen)
		checkParseResult(t, h, err)
	})
}

func FuzzReadHeader(f *testing.F) {
	f.Add(stBytes(`{}`, 0))
	f.Add(stBytes(`{"__metadata__":{"k":"v"},`+f32("a", "[1]", 0, 4)+`,`+f32("b", "[1]", 4, 8)+`}`, 8))
	f.Add([]byte("PK\x03\x04\x00\x00\x00\x00{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cr := &countingReaderAt{r: bytes.NewReader(data)}
		h, err := ReadHeader(cr, int64(len(data)))
		checkParseResult(t, h, err)
		if cr.calls > 2 {
			t.Fatalf("%d ReadAt calls", cr.calls)
		}
		if h != nil && cr.maxEnd != h.DataStart() {
			t.Fatalf("read up to %d, data starts at %d", cr.maxEnd, h.DataStart())
		}
	})
}

// checkParseResult checks the invariants of any parse: failures are
// FormatErrors, and successes are internally consistent and re-encodable.
func checkParseResult(t *testing.T, h *Header, err error) {
	t.Helper()
	if err != nil {
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("error is %T, not *FormatError: %v", err, err)
		}
		if h != nil {
			t.Fatal("non-nil header with error")
		}
		return
	}
	var pos int64
	for _, ti := range h.Tensors {
		if ti.Begin != pos || ti.End < ti.Begin || !ti.DType.Valid() {
			t.Fatalf("bad tensor accepted: %+v", ti)
		}
		if n := ti.NumElements(); n < 0 || n*int64(ti.DType.Size()) != ti.ByteLen() {
			t.Fatalf("size mismatch accepted: %+v", ti)
		}
		if got, ok := h.Lookup(ti.Name); !ok || got.Begin != ti.Begin || got.End != ti.End {
			t.Fatalf("Lookup(%q) = %+v, %v", ti.Name, got, ok)
		}
		pos = ti.End
	}
	if pos != h.DataLen || len(h.Names()) != len(h.Tensors) {
		t.Fatalf("accepted header covers %d of %d bytes", pos, h.DataLen)
	}
	checkReencode(t, h)
}
