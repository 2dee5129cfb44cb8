// Package loratest writes synthetic Wan2.1 LoRA files with the real shapes of the 14B and
// 1.3B transformers, in any of the three key families, for tests and benchmarks. The data is
// deterministic pseudo-random floats, streamed, so gigabyte files cost no memory.
package loratest

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/safetensors"
)

// Spec describes one synthetic LoRA.
type Spec struct {
	Base       string      // lora.BaseT2V14B (default), BaseT2V1_3B, BaseI2V14B
	Family     lora.Family // default Comfy (ai-toolkit)
	Rank       int         // default 4
	Alpha      float64     // 0: no alpha stored (alpha = rank)
	AlphaDType safetensors.DType
	DType      safetensors.DType // default BF16
	Blocks     []int             // default {0, 1, last}
	Modules    []string          // per-block modules, default attention q/k/v/o (self+cross) and ffn.0/ffn.2 (+k_img/v_img for I2V)
	Seed       uint64
	DoRA, Diff bool
	Metadata   map[string]string
	RankOf     func(module string) int // per-module rank override
}

// DefaultModules are the modules ai-toolkit targets in a Wan block.
var DefaultModules = []string{
	"self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
	"cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
	"ffn.0", "ffn.2",
}

func (s *Spec) defaults() lora.Arch {
	if s.Base == "" {
		s.Base = lora.BaseT2V14B
	}
	if s.Family == "" {
		s.Family = lora.Comfy
	}
	if s.Rank == 0 {
		s.Rank = 4
	}
	if s.DType == "" {
		s.DType = safetensors.BF16
	}
	if s.AlphaDType == "" {
		s.AlphaDType = safetensors.F32
	}
	a, _ := lora.ArchOf(s.Base)
	if s.Blocks == nil {
		s.Blocks = []int{0, 1, a.Layers - 1}
	}
	if s.Modules == nil {
		s.Modules = append([]string{}, DefaultModules...)
		if a.I2V {
			s.Modules = append(s.Modules, "cross_attn.k_img", "cross_attn.v_img")
		}
	}
	return a
}

func io2(sub string, a lora.Arch) (in, out int64) {
	switch sub {
	case "ffn.0":
		return a.Dim, a.FFNDim
	case "ffn.2":
		return a.FFNDim, a.Dim
	}
	return a.Dim, a.Dim
}

// Write creates the LoRA file at path.
func Write(path string, s Spec) error {
	a := s.defaults()
	style := lora.Style{Family: s.Family}
	var specs []safetensors.TensorSpec
	for _, b := range s.Blocks {
		for _, sub := range s.Modules {
			mod := fmt.Sprintf("blocks.%d.%s", b, sub)
			in, out := io2(sub, a)
			r := int64(s.Rank)
			if s.RankOf != nil {
				r = int64(s.RankOf(mod))
			}
			specs = append(specs,
				safetensors.TensorSpec{Name: lora.FormatKey(style, mod, lora.PartA), DType: s.DType, Shape: []int64{r, in}},
				safetensors.TensorSpec{Name: lora.FormatKey(style, mod, lora.PartB), DType: s.DType, Shape: []int64{out, r}})
			if s.Alpha != 0 && s.Family != lora.Diffusers {
				specs = append(specs, safetensors.TensorSpec{Name: lora.FormatKey(style, mod, lora.PartAlpha), DType: s.AlphaDType, Shape: []int64{}})
			}
			if s.DoRA {
				specs = append(specs, safetensors.TensorSpec{Name: lora.FormatKey(style, mod, lora.PartDoRA), DType: s.DType, Shape: []int64{out}})
			}
			if s.Diff && sub == "ffn.0" {
				specs = append(specs, safetensors.TensorSpec{Name: lora.FormatKey(style, mod, lora.PartDiffB), DType: s.DType, Shape: []int64{out}})
			}
		}
	}
	meta := map[string]string{}
	for k, v := range s.Metadata {
		meta[k] = v
	}
	if s.Family == lora.Comfy && s.Metadata == nil {
		meta["software"] = `{"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit", "version": "0.7.5"}`
		meta["ss_base_model_version"] = "wan_2.1"
		meta["training_info"] = `{"step": 1000, "epoch": 2}`
	}
	if s.Family == lora.Diffusers && s.Alpha != 0 {
		js, _ := json.Marshal(map[string]any{"transformer.r": s.Rank, "transformer.lora_alpha": s.Alpha})
		meta[lora.AdapterMetadataKey] = string(js)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := safetensors.NewWriter(bw, specs, meta)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x5eed))
	for _, sp := range specs {
		n := int64(1)
		for _, d := range sp.Shape {
			n *= d
		}
		var r io.Reader
		if len(sp.Shape) == 0 {
			r = &floats{dt: sp.DType, n: 1, fixed: s.Alpha}
		} else {
			r = &floats{dt: sp.DType, n: n, rng: rng}
		}
		if err := w.WriteTensor(sp.Name, r); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// floats streams n little-endian floats of dtype dt: normal(0, 0.02) values, or fixed.
type floats struct {
	dt    safetensors.DType
	n     int64
	rng   *rand.Rand
	fixed float64
	buf   []byte
}

func (f *floats) Read(p []byte) (int, error) {
	sz := f.dt.Size()
	w := 0
	for len(f.buf) == 0 || w < len(p) {
		if len(f.buf) > 0 {
			c := copy(p[w:], f.buf)
			f.buf = f.buf[c:]
			w += c
			continue
		}
		if f.n == 0 {
			if w == 0 {
				return 0, io.EOF
			}
			return w, nil
		}
		f.n--
		v := f.fixed
		if f.rng != nil {
			v = f.rng.NormFloat64() * 0.02
		}
		var b [8]byte
		switch f.dt {
		case safetensors.BF16:
			binary.LittleEndian.PutUint16(b[:], uint16(math.Float32bits(float32(v))>>16))
		case safetensors.F16:
			binary.LittleEndian.PutUint16(b[:], f16(float32(v)))
		case safetensors.F32:
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(float32(v)))
		case safetensors.F64:
			binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
		default:
			return w, fmt.Errorf("loratest: dtype %s not supported", f.dt)
		}
		f.buf = append(f.buf[:0], b[:sz]...)
	}
	return w, nil
}

// f16 truncates a float32 in the half range to IEEE half (test data only).
func f16(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	if exp <= 0 {
		return sign
	}
	return sign | uint16(exp)<<10 | uint16(b>>13&0x3ff)
}
