package lora_test

// Benchmarks on full-size synthetic Wan2.1 14B LoRAs (all 40 blocks, attention + ffn,
// rank 16, bf16: 153 MB, the size of a real ai-toolkit LoRA). The files are generated
// inside each benchmark (b.TempDir), so plain `go test` never pays for them; run with
//
//	go test -run='^$' -bench=. -benchtime=3x ./internal/lora/
//
// The command-level comparisons against cp, and the peak-RSS checks, are in bench/lora.sh.

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// benchSpec is the ai-toolkit shape: every block, the ten attention/ffn modules.
func benchSpec(fam lora.Family, alpha float64) loratest.Spec {
	s := loratest.Spec{Family: fam, Rank: 16, Alpha: alpha, Modules: loratest.DefaultModules, Seed: 1}
	for i := range 40 {
		s.Blocks = append(s.Blocks, i)
	}
	return s
}

// benchFile writes the LoRA once per benchmark run (b.Loop runs the body only once).
func benchFile(b *testing.B, s loratest.Spec) (string, int64) {
	b.Helper()
	p := filepath.Join(b.TempDir(), "in.safetensors")
	if err := loratest.Write(p, s); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	return p, st.Size()
}

// procIO returns this process's read syscalls and bytes read so far (Linux
// /proc/self/io: syscr, rchar); ok is false where that file does not exist.
func procIO() (calls, bytes int64, ok bool) {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			calls = n
		case "rchar":
			bytes = n
		}
	}
	return calls, bytes, true
}

func benchInspect(b *testing.B, s loratest.Spec) {
	path, size := benchFile(b, s)
	b.ReportAllocs()
	c0, r0, ok := procIO()
	for b.Loop() {
		r, err := lora.Inspect(path, lora.InspectOptions{Hash: false})
		if err != nil {
			b.Fatal(err)
		}
		if r.Tensors == 0 {
			b.Fatal("no tensors")
		}
	}
	c1, r1, _ := procIO()
	if ok {
		// These include a few reads of the runtime's own (e.g. /proc) files, if any.
		b.ReportMetric(float64(c1-c0)/float64(b.N), "read-calls/op")
		b.ReportMetric(float64(r1-r0)/float64(b.N), "read-B/op")
	}
	b.ReportMetric(float64(size)/1e6, "file-MB")
}

// BenchmarkInspect147MB inspects (without hashing) a 153 MB ai-toolkit LoRA: only the
// ~99 KB header is read, so read-B/op stays far below file-MB.
func BenchmarkInspect147MB(b *testing.B) { benchInspect(b, benchSpec(lora.Comfy, 0)) }

// BenchmarkInspect147MBAlphaKeys is the same with a kohya file carrying 400 alpha scalars,
// each of which is read (4 bytes apiece, one pread per scalar where they are not adjacent).
func BenchmarkInspect147MBAlphaKeys(b *testing.B) { benchInspect(b, benchSpec(lora.Kohya, 8)) }

func benchConvert(b *testing.B, s loratest.Spec, opt lora.ConvertOptions) {
	in, size := benchFile(b, s)
	out := filepath.Join(filepath.Dir(in), "out.safetensors")
	b.SetBytes(size) // MB/s of input
	b.ReportAllocs()
	var outBytes int64
	for b.Loop() {
		res, err := lora.ConvertFile(in, out, opt)
		if err != nil {
			b.Fatal(err)
		}
		outBytes = res.Bytes
	}
	b.ReportMetric(float64(size)/1e6, "in-MB")
	b.ReportMetric(float64(outBytes)/1e6, "out-MB")
}

// BenchmarkConvert converts a 153 MB ai-toolkit (comfy) LoRA to kohya keys: a streamed
// bit-for-bit copy with a sha256 of the output and an fsync, as `scopectl lora convert`.
func BenchmarkConvert(b *testing.B) {
	benchConvert(b, benchSpec(lora.Comfy, 0), lora.ConvertOptions{To: lora.Kohya})
}

// BenchmarkConvertFoldAlpha converts a 153 MB comfy LoRA with alpha 8 (scale 0.5) to
// kohya with --fold-alpha: every lora_B is multiplied and widened from bf16 to f32.
func BenchmarkConvertFoldAlpha(b *testing.B) {
	benchConvert(b, benchSpec(lora.Comfy, 8), lora.ConvertOptions{To: lora.Kohya, FoldAlpha: true})
}
