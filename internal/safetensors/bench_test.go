package safetensors

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// loraSpecs returns LoRA-shaped specs for a 40-block, 5120-wide model:
// 700 rank-16 and 100 rank-32 bf16 factors, 800 tensors, ~147 MB of data.
func loraSpecs() []TensorSpec {
	var specs []TensorSpec
	for i := range 800 {
		shape := []int64{16, 5120}
		if i%2 == 1 {
			shape = []int64{5120, 16}
		}
		if i >= 700 {
			shape = []int64{5120, 32}
		}
		specs = append(specs, TensorSpec{
			Name:  fmt.Sprintf("diffusion_model.blocks.%d.attn.m%d.lora_%c.weight", i/20, i%20/2, "AB"[i%2]),
			DType: BF16,
			Shape: shape,
		})
	}
	return specs
}

// BenchmarkReadHeader147MB validates a 147 MB LoRA; the metrics show that
// the cost is two reads of the header only, independent of the data size.
func BenchmarkReadHeader147MB(b *testing.B) {
	hb, err := HeaderBytes(loraSpecs(), map[string]string{"ss_network_dim": "16"})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "lora.safetensors")
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	var dataLen int64
	for _, s := range loraSpecs() {
		n, _ := byteLen(s.Shape, s.DType)
		dataLen += n
	}
	out.Write(hb)
	if err := out.Truncate(int64(len(hb)) + dataLen); err != nil { // sparse data region
		b.Fatal(err)
	}
	out.Close()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()

	cr := &countingReaderAt{r: f}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadHeader(cr, st.Size()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cr.calls)/float64(b.N), "reads/op")
	b.ReportMetric(float64(cr.bytes)/float64(b.N), "read-B/op")
	b.ReportMetric(float64(st.Size())/1e6, "file-MB")
}

// BenchmarkWriterStream measures Writer throughput copying 64 × 1 MiB tensors.
func BenchmarkWriterStream(b *testing.B) {
	var specs []TensorSpec
	for i := range 64 {
		specs = append(specs, TensorSpec{Name: fmt.Sprintf("t%d", i), DType: F16, Shape: []int64{512, 1024}})
	}
	chunk := bytes.Repeat([]byte{1, 2, 3, 4}, 1<<18) // 1 MiB
	b.SetBytes(int64(len(specs) * len(chunk)))
	b.ReportAllocs()
	r := bytes.NewReader(chunk)
	// Hide io.Discard's ReadFrom so the copy goes through the Writer's buffer.
	dst := struct{ io.Writer }{io.Discard}
	for b.Loop() {
		w, err := NewWriter(dst, specs, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range specs {
			r.Reset(chunk)
			if err := w.WriteTensor(s.Name, r); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
