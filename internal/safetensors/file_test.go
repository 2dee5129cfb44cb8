package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriterOpenRoundTrip(t *testing.T) {
	specs := []TensorSpec{
		{"blocks.0.attn.q.lora_A.weight", BF16, []int64{4, 16}},
		{"blocks.0.attn.q.lora_B.weight", BF16, []int64{16, 4}},
		{"empty", F16, []int64{0, 5}},
		{"alpha", F32, nil}, // scalar
		{"f64", F64, []int64{3}},
		{"mask", BOOL, []int64{7}},
		{"ids", I64, []int64{2, 2}},
		{"fp8", F8_E4M3, []int64{9}},
		{"u8", U8, []int64{1}},
	}
	meta := map[string]string{"format": "pt", "ss_network_alpha": "4", "note": `<&> "quoted"` + "\n"}
	rng := rand.New(rand.NewPCG(1, 2))
	data := make(map[string][]byte)
	for _, s := range specs {
		n, _ := byteLen(s.Shape, s.DType)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		data[s.Name] = b
	}

	path := filepath.Join(t.TempDir(), "lora.safetensors")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(out, specs, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		if err := w.WriteTensor(s.Name, bytes.NewReader(data[s.Name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Close must leave the underlying file usable.
	if _, err := out.Write(nil); err != nil {
		t.Fatalf("underlying writer closed by Writer.Close: %v", err)
	}
	out.Close()

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Header.Metadata) != len(meta) || f.Header.Metadata["note"] != meta["note"] {
		t.Errorf("metadata %q, want %q", f.Header.Metadata, meta)
	}
	if f.Header.DataStart()%8 != 0 {
		t.Errorf("data starts at %d, not 8-aligned", f.Header.DataStart())
	}
	for i, s := range specs {
		ti, ok := f.Header.Lookup(s.Name)
		wantN, _ := numElements(s.Shape)
		if !ok || ti.DType != s.DType || ti.NumElements() != wantN || int64(len(data[s.Name])) != ti.ByteLen() {
			t.Fatalf("Lookup(%q) = %+v, %v", s.Name, ti, ok)
		}
		if f.Header.Tensors[i].Name != s.Name {
			t.Errorf("Tensors[%d] = %q, want spec order %q", i, f.Header.Tensors[i].Name, s.Name)
		}
		got, err := f.ReadTensor(s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[s.Name]) {
			t.Errorf("tensor %q bytes differ", s.Name)
		}
	}
	sr, err := f.Tensor("f64")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(sr); !bytes.Equal(b, data["f64"]) {
		t.Errorf("Tensor reader bytes differ")
	}
	if _, err := f.Tensor("nope"); err == nil || !strings.Contains(err.Error(), `no tensor "nope"`) {
		t.Errorf("missing tensor: %v", err)
	}
	// The whole file is what the Python writer would lay out: prefix + data.
	raw, _ := os.ReadFile(path)
	hb, _ := HeaderBytes(specs, meta)
	if !bytes.HasPrefix(raw, hb) || int64(len(raw)) != f.Header.DataStart()+f.Header.DataLen {
		t.Errorf("file does not start with HeaderBytes or has wrong size")
	}
}

func TestHeaderBytesJSON(t *testing.T) {
	hb, err := HeaderBytes([]TensorSpec{{"a", F32, []int64{2}}, {"b", U8, nil}}, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[],"data_offsets":[8,9]}}`
	got := string(hb[8:])
	if strings.TrimRight(got, " ") != want || (8+len(got))%8 != 0 {
		t.Errorf("got  %q\nwant %q padded to a multiple of 8", got, want)
	}
	if n := binary.LittleEndian.Uint64(hb); n != uint64(len(got)) {
		t.Errorf("prefix %d, header %d bytes", n, len(got))
	}
}

func TestWriterSpecErrors(t *testing.T) {
	tests := []struct {
		name  string
		specs []TensorSpec
		meta  map[string]string
		field string
		msg   string
	}{
		{"duplicate", []TensorSpec{{"a", U8, nil}, {"a", U8, nil}}, nil, "a", "duplicate"},
		{"bad dtype", []TensorSpec{{"a", "F4", nil}}, nil, "a", "unknown dtype"},
		{"negative dim", []TensorSpec{{"a", U8, []int64{-1}}}, nil, "a", "negative or overflows"},
		{"overflow", []TensorSpec{{"a", F32, []int64{1 << 31, 1 << 31, 4}}}, nil, "a", "overflows"},
		{"total overflow", []TensorSpec{{"a", U8, []int64{1 << 62}}, {"b", U8, []int64{1 << 62}}}, nil, "b", "data buffer size overflows"},
		{"reserved name", []TensorSpec{{"__metadata__", U8, nil}}, nil, "__metadata__", "reserved"},
		{"bad utf8 name", []TensorSpec{{"a\xff", U8, nil}}, nil, "a\xff", "UTF-8"},
		{"bad utf8 metadata", nil, map[string]string{"k": "\xff"}, "__metadata__", "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := NewWriter(&buf, tc.specs, tc.meta)
			wantFormatErr(t, err, tc.field, tc.msg)
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes despite invalid specs", buf.Len())
			}
		})
	}
}

func TestWriterMisuse(t *testing.T) {
	specs := []TensorSpec{{"a", U8, []int64{4}}, {"b", U8, []int64{4}}}
	w, err := NewWriter(io.Discard, specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("b", strings.NewReader("1234")); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Fatalf("out of order: %v", err)
	}
	// Out-of-order writes nothing, so the right tensor still works; extra
	// input beyond the tensor's length is left unread.
	if err := w.WriteTensor("a", strings.NewReader("123456")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `1 of 2 tensors unwritten, starting at "b"`) {
		t.Fatalf("Close with missing tensor: %v", err)
	}

	w, _ = NewWriter(io.Discard, specs, nil)
	err = w.WriteTensor("a", strings.NewReader("12"))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short reader: %v", err)
	}
	if err2 := w.WriteTensor("b", strings.NewReader("1234")); err2 != err {
		t.Fatalf("error after short write not sticky: %v", err2)
	}
	if w.Close() != err {
		t.Fatal("Close after failed write should return the write error")
	}

	w, _ = NewWriter(io.Discard, specs[:1], nil)
	w.WriteTensor("a", strings.NewReader("1234"))
	if err := w.WriteTensor("a", strings.NewReader("1234")); err == nil {
		t.Fatal("write past last tensor accepted")
	}
}

func TestOpenRefusesTorchCheckpoints(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, kind string }{
		{"model.pt", "PK\x03\x04\x00\x00\x08\x00\x00\x00archive/data.pkl", "zip"},
		{"legacy.ckpt", "\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.", "pickle"},
		{"proto5.bin", "\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", "pickle"},
	} {
		path := filepath.Join(dir, tc.name)
		os.WriteFile(path, []byte(tc.content), 0o644)
		_, err := Open(path)
		if err == nil || !strings.HasPrefix(err.Error(), path+": ") ||
			!strings.Contains(err.Error(), "PyTorch "+tc.kind) || !strings.Contains(err.Error(), "pickle can run code") || !strings.Contains(err.Error(), "not safetensors") {
			t.Errorf("%s: got %v", tc.name, err)
		}
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Errorf("%s: not a FormatError", tc.name)
		}
	}
}

// TestOpenHeaderLookingLikePickle checks that a valid file whose header length
// happens to be 640 (bytes 0x80 0x02, a pickle PROTO 2 opcode) still opens.
func TestOpenHeaderLookingLikePickle(t *testing.T) {
	js := `{"__metadata__":{"pad":"`
	js += strings.Repeat("x", 640-len(js)-3) + `"}}`
	file := stBytes(js, 0)
	if file[0] != 0x80 || file[1] != 0x02 {
		t.Fatalf("prefix % x", file[:2])
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	os.WriteFile(path, file, 0o644)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(path, stBytes(`{`+f32("a", "[1]", 0, 4)+`}`, 8), 0o644)
	_, err := Open(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+": safetensors: header: tensors cover 4 bytes") {
		t.Errorf("got %v", err)
	}
	wantFormatErr(t, err, "header", "trailing")
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestReadTensorLimit(t *testing.T) {
	specs := []TensorSpec{{"big", U8, []int64{maxReadTensor + 1}}, {"small", U8, []int64{2}}}
	hb, _ := HeaderBytes(specs, nil)
	path := filepath.Join(t.TempDir(), "big.safetensors")
	out, _ := os.Create(path)
	out.Write(hb)
	out.Truncate(int64(len(hb)) + maxReadTensor + 3) // sparse
	out.Close()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadTensor("big"); err == nil || !strings.Contains(err.Error(), "ReadTensor limit") {
		t.Errorf("big tensor: %v", err)
	}
	if b, err := f.ReadTensor("small"); err != nil || len(b) != 2 {
		t.Errorf("small tensor: %v %v", b, err)
	}
}
