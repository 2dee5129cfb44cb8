// Package safetensors reads, validates and writes the safetensors file format
// (https://github.com/huggingface/safetensors) without loading tensor data.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON describing
// every tensor (dtype, shape, byte range), then one flat data buffer. Because
// the header alone describes the whole file, a LoRA of hundreds of megabytes
// can be fully validated by reading a few hundred kilobytes. The checks mirror
// the reference Rust implementation so that anything accepted here is also
// accepted by Python's safetensors library, which is what finally loads it.
package safetensors

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxHeaderSize is the largest header length accepted, the same cap as the
// reference implementation. It bounds the only allocation sized by the file.
const MaxHeaderSize = 100_000_000

// DType is a tensor element type, spelled as in the header JSON.
type DType string

// The element types defined by the format.
const (
	BOOL    DType = "BOOL"
	U8      DType = "U8"
	I8      DType = "I8"
	F8_E5M2 DType = "F8_E5M2"
	F8_E4M3 DType = "F8_E4M3"
	I16     DType = "I16"
	U16     DType = "U16"
	F16     DType = "F16"
	BF16    DType = "BF16"
	I32     DType = "I32"
	U32     DType = "U32"
	F32     DType = "F32"
	F64     DType = "F64"
	I64     DType = "I64"
	U64     DType = "U64"
)

// Size returns the size of one element in bytes, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case BOOL, U8, I8, F8_E5M2, F8_E4M3:
		return 1
	case I16, U16, F16, BF16:
		return 2
	case I32, U32, F32:
		return 4
	case F64, I64, U64:
		return 8
	}
	return 0
}

// Valid reports whether d is one of the dtypes defined by the format.
func (d DType) Valid() bool { return d.Size() > 0 }

// FormatError reports a file that violates the safetensors format.
// Field names the offending tensor (possibly ""), or is "header" or
// "__metadata__" for problems not tied to one tensor, or "file" for a file
// that is not safetensors at all.
type FormatError struct {
	Field string
	Msg   string
}

func (e *FormatError) Error() string {
	switch e.Field {
	case "file":
		return "safetensors: " + e.Msg
	case "header", metadataKey:
		return "safetensors: " + e.Field + ": " + e.Msg
	}
	return fmt.Sprintf("safetensors: tensor %q: %s", e.Field, e.Msg)
}

// metadataKey is the reserved header key holding free-form string metadata.
const metadataKey = "__metadata__"

func formatErr(field, format string, args ...any) *FormatError {
	return &FormatError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// TensorInfo describes one tensor of a header.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	// Begin and End are the data_offsets: the tensor occupies bytes
	// [Begin, End) of the data buffer (not of the file).
	Begin, End int64
}

// NumElements returns the product of the shape (1 for a scalar), or -1 if it
// overflows int64, which cannot happen for a TensorInfo from a parsed Header.
func (t TensorInfo) NumElements() int64 {
	n, ok := numElements(t.Shape)
	if !ok {
		return -1
	}
	return n
}

// ByteLen returns the length of the tensor's data in bytes.
func (t TensorInfo) ByteLen() int64 { return t.End - t.Begin }

// numElements multiplies left to right with overflow checks, like the
// reference implementation, so a shape such as [2^40, 2^40, 0] is rejected
// even though its true product is 0.
func numElements(shape []int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 || (d != 0 && n > math.MaxInt64/d) {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// byteLen returns product(shape) × dtype size, or false on overflow.
func byteLen(shape []int64, dt DType) (int64, bool) {
	n, ok := numElements(shape)
	size := int64(dt.Size())
	if !ok || size == 0 || n > math.MaxInt64/size {
		return 0, false
	}
	return n * size, true
}

// fmtInts formats a shape or offset pair as in the header JSON: [2,3].
func fmtInts(v []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(x, 10))
	}
	b.WriteByte(']')
	return b.String()
}
