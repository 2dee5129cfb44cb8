package lora_test

import (
	"bytes"
	"encoding/binary"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/safetensors"
)

var fuzzFamilies = []lora.Family{lora.Comfy, lora.Diffusers, lora.Kohya}

// The seed corpora also live in testdata/fuzz/Fuzz*/ (hand-written seeds and
// inputs the fuzzer found); the f.Add seeds below cover every key family.

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{
		"diffusion_model.blocks.0.self_attn.q.lora_A.weight",
		"diffusion_model.blocks.39.ffn.2.lora_B.weight",
		"diffusion_model.blocks.3.cross_attn.k_img.alpha",
		"model.diffusion_model.blocks.1.cross_attn.norm_k_img.diff",
		"blocks.0.norm3.diff_b",
		"blocks.0.norm2.diff", // diffusers spelling, bare: ambiguous
		"transformer.blocks.7.attn1.to_out.0.lora_A.weight",
		"transformer.blocks.7.attn2.add_k_proj.lora_magnitude_vector",
		"transformer.blocks.0.self_attn.q.lora_B.weight", // Wan names under a PEFT prefix
		"base_model.model.blocks.2.ffn.net.0.proj.lora_A.default.weight",
		"transformer.condition_embedder.time_proj.lora_A.weight",
		"transformer.proj_out.lora_magnitude_vector.weight",
		"transformer.patch_embedding.lora_B.weight",
		"diffusion_model.head.head.lora_B.weight",
		"diffusion_model.img_emb.proj.1.dora_scale",
		"diffusion_model.text_embedding.0.lora_down.weight",
		"lora_unet_blocks_0_self_attn_q.lora_down.weight",
		"lora_unet_blocks_12_cross_attn_v_img.lora_up.weight",
		"lora_unet_blocks_007_ffn_0.alpha",
		"lora_unet_time_projection_1.alpha",
		"lora_unet_img_emb_proj_3.diff",
		"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", // SD 1.x
		"lora_unet_.alpha",
		"lora_unet_blocks__self_attn_q.alpha",
		"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight", // FLUX
		"blocks.0.self_attn.q.weight",                                     // full checkpoint
		".lora_A.weight",
		"lora_A.weight",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		k, ok := lora.ParseKey(name)
		_ = k.Block()
		if !ok {
			return
		}
		if k.Module == "" || k.Part.String() == "" || lora.Target(k.Module) == "" {
			t.Fatalf("ParseKey(%q) = %+v", name, k)
		}
		for _, st := range []lora.Style{{Family: lora.Comfy}, {Family: lora.Comfy, Bare: true}, {Family: lora.Diffusers}, {Family: lora.Kohya}} {
			s := lora.FormatKey(st, k.Module, k.Part)
			k2, ok := lora.ParseKey(s)
			if !ok {
				t.Fatalf("ParseKey(%q) = %+v; FormatKey(%+v) = %q does not parse", name, k, st, s)
			}
			if k2.Module != k.Module || k2.Part != k.Part || k2.Family != st.Family {
				t.Fatalf("ParseKey(%q) = %+v; FormatKey(%+v) = %q re-parses as %+v", name, k, st, s, k2)
			}
			if k2.Block() != k.Block() {
				t.Fatalf("%q: block %d, re-parsed %q: block %d", name, k.Block(), s, k2.Block())
			}
		}
	})
}

// stFile builds a safetensors file with safetensors.NewWriter: tensors in the
// order given, alpha scalars (and any tensor named in vals) holding the given
// value, every other tensor filled with a fixed byte pattern.
func stFile(t testing.TB, specs []safetensors.TensorSpec, meta map[string]string, vals map[string]float64) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := safetensors.NewWriter(&buf, specs, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		n := int64(s.DType.Size())
		for _, d := range s.Shape {
			n *= d
		}
		b := make([]byte, n)
		if v, ok := vals[s.Name]; ok {
			b = b[:0]
			switch s.DType {
			case safetensors.F32:
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(v)))
			case safetensors.F64:
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
			case safetensors.BF16:
				b = binary.LittleEndian.AppendUint16(b, uint16(math.Float32bits(float32(v))>>16))
			case safetensors.I64:
				b = binary.LittleEndian.AppendUint64(b, uint64(int64(v)))
			case safetensors.I32:
				b = binary.LittleEndian.AppendUint32(b, uint32(int32(v)))
			default:
				t.Fatalf("stFile: no value encoding for %s", s.DType)
			}
		} else {
			for i := range b {
				b[i] = byte(i*7 + 1)
			}
		}
		if err := w.WriteTensor(s.Name, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func ts(name string, dt safetensors.DType, shape ...int64) safetensors.TensorSpec {
	return safetensors.TensorSpec{Name: name, DType: dt, Shape: shape}
}

// inspectSeeds are small handcrafted files: valid LoRAs of every family with
// tiny shapes (so the conversion path runs on them) and damaged ones.
func inspectSeeds(t testing.TB) map[string][]byte {
	const (
		cA = "diffusion_model.blocks.0.self_attn.q.lora_A.weight"
		cB = "diffusion_model.blocks.0.self_attn.q.lora_B.weight"
		cN = "diffusion_model.blocks.0.self_attn.q.alpha"
		dA = "transformer.blocks.0.attn1.to_q.lora_A.weight"
		dB = "transformer.blocks.0.attn1.to_q.lora_B.weight"
		kA = "lora_unet_blocks_0_self_attn_q.lora_down.weight"
		kB = "lora_unet_blocks_0_self_attn_q.lora_up.weight"
		kN = "lora_unet_blocks_0_self_attn_q.alpha"
	)
	bf, f32 := safetensors.BF16, safetensors.F32
	return map[string][]byte{
		"comfy_tiny_alpha": stFile(t, []safetensors.TensorSpec{ts(cA, bf, 1, 4), ts(cB, bf, 4, 1), ts(cN, f32)},
			map[string]string{"software": `{"name": "ai-toolkit"}`}, map[string]float64{cN: 2}),
		"kohya_tiny_f64_alpha": stFile(t, []safetensors.TensorSpec{ts(kA, f32, 2, 3), ts(kB, f32, 3, 2), ts(kN, safetensors.F64)},
			nil, map[string]float64{kN: 0.5}),
		"kohya_int_alpha": stFile(t, []safetensors.TensorSpec{ts(kA, bf, 2, 3), ts(kB, bf, 3, 2), ts(kN, safetensors.I64)},
			nil, map[string]float64{kN: 8}),
		"diffusers_alpha_pattern": stFile(t, []safetensors.TensorSpec{
			ts(dA, bf, 2, 4), ts(dB, bf, 4, 2),
			ts("transformer.blocks.1.ffn.net.2.lora_A.weight", bf, 1, 3), ts("transformer.blocks.1.ffn.net.2.lora_B.weight", bf, 4, 1),
		}, map[string]string{
			lora.AdapterMetadataKey: `{"transformer.r": 2, "transformer.lora_alpha": 4, "transformer.alpha_pattern": {"blocks.1.ffn.net.2": 3, "to_q": 1.5}}`,
			"scopectl_alpha_dtype":  "F16",
		}, nil),
		"diffusers_overlapping_patterns": stFile(t, []safetensors.TensorSpec{ts(dA, bf, 2, 4), ts(dB, bf, 4, 2)},
			map[string]string{lora.AdapterMetadataKey: `{"lora_alpha": 2, "alpha_pattern": {"to_q": 1.5, "attn1.to_q": 6, "0.attn1.to_q": 12}}`}, nil),
		"diffusers_alpha_beyond_f16": stFile(t, []safetensors.TensorSpec{ts(dA, bf, 2, 4), ts(dB, bf, 4, 2)},
			map[string]string{lora.AdapterMetadataKey: `{"lora_alpha": 1e39, "alpha_pattern": {"to_q": 1e6}}`, "scopectl_alpha_dtype": "F16"}, nil),
		"diffusers_malformed_metadata": stFile(t, []safetensors.TensorSpec{ts(dA, bf, 2, 4), ts(dB, bf, 4, 2)},
			map[string]string{lora.AdapterMetadataKey: `{"transformer.lora_alpha": 4,`}, nil),
		"diffusers_metadata_not_object": stFile(t, []safetensors.TensorSpec{ts(dA, bf, 2, 4), ts(dB, bf, 4, 2)},
			map[string]string{lora.AdapterMetadataKey: `[1, 2]`, "scopectl_alpha_dtype": "U8"}, nil),
		"mismatched_rank":  stFile(t, []safetensors.TensorSpec{ts(cA, bf, 2, 4), ts(cB, bf, 4, 3)}, nil, nil),
		"alpha_not_scalar": stFile(t, []safetensors.TensorSpec{ts(kA, bf, 2, 4), ts(kB, bf, 4, 2), ts(kN, f32, 2)}, nil, nil),
		"alpha_zero":       stFile(t, []safetensors.TensorSpec{ts(cA, bf, 2, 4), ts(cB, bf, 4, 2), ts(cN, f32)}, nil, map[string]float64{cN: 0}),
		"a_without_b":      stFile(t, []safetensors.TensorSpec{ts(cA, bf, 2, 4), ts("diffusion_model.blocks.1.ffn.0.lora_B.weight", bf, 4, 2)}, nil, nil),
		"mixed_families_dora_diff": stFile(t, []safetensors.TensorSpec{
			ts(cA, bf, 1, 4), ts(cB, bf, 4, 1),
			ts("diffusion_model.blocks.0.self_attn.q.dora_scale", bf, 4),
			ts("diffusion_model.blocks.0.ffn.0.diff_b", bf, 4),
			ts("lora_unet_blocks_1_cross_attn_k_img.lora_down.weight", f32, 1, 2),
			ts("lora_unet_blocks_1_cross_attn_k_img.lora_up.weight", f32, 2, 1),
			ts("blocks.2.cross_attn.o.lora_A.weight", bf, 1, 2), ts("blocks.2.cross_attn.o.lora_B.weight", bf, 2, 1),
			ts("some.other.tensor", safetensors.U8, 3),
		}, nil, nil),
		"sdxl_lora": stFile(t, []safetensors.TensorSpec{
			ts("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", bf, 1, 2),
			ts("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", bf, 2, 1),
			ts("lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha", f32),
		}, nil, nil),
		"empty_header": stFile(t, nil, nil, nil),
	}
}

func FuzzInspect(f *testing.F) {
	dir := f.TempDir()
	for i, s := range []loratest.Spec{
		{Base: lora.BaseT2V1_3B, Blocks: []int{0}, Modules: []string{"self_attn.q"}, Rank: 2},
		{Base: lora.BaseT2V1_3B, Blocks: []int{0}, Modules: []string{"self_attn.q"}, Rank: 2, Family: lora.Kohya, Alpha: 1},
		{Base: lora.BaseT2V1_3B, Blocks: []int{0}, Modules: []string{"self_attn.q"}, Rank: 2, Family: lora.Diffusers, Alpha: 4},
		{Base: lora.BaseT2V1_3B, Blocks: []int{29}, Modules: []string{"cross_attn.o"}, Rank: 1, Family: lora.Kohya, Alpha: 3,
			AlphaDType: safetensors.F16, DType: safetensors.F16, DoRA: true},
	} {
		p := filepath.Join(dir, "seed"+string(rune('0'+i))+".safetensors")
		if err := loratest.Write(p, s); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seeds := inspectSeeds(f)
	for _, name := range slices.Sorted(maps.Keys(seeds)) {
		f.Add(seeds[name])
	}
	f.Add([]byte("\x80\x02}q\x00."))                    // pickle
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}")) // header only
	// One directory per fuzzing process, reused: inputs run one at a time.
	work := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(work, "in.safetensors")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := lora.Inspect(path, lora.InspectOptions{})
		if err != nil {
			if r != nil {
				t.Fatal("report with error")
			}
			return
		}
		if r.Kind != "wan-lora" || len(r.Problems) > 0 {
			return
		}
		checkConvert(t, path, r)
	})
}

// checkConvert runs every conversion of a file Inspect calls a sound Wan
// LoRA. Each must succeed (the file has no problems), and its output must
// inspect as the same LoRA: same modules and ranks, alphas preserved (or
// folded into lora_B). Converting the output back to the file's own family
// must give the same LoRA again.
func checkConvert(t *testing.T, path string, r *lora.Report) {
	// The same file must always be described the same way.
	if again := convert(t, path, "", lora.ConvertOptions{}, ""); !sameAlphas(r, again) || again.Rank != r.Rank || again.Base != r.Base {
		t.Fatalf("inspected twice: alpha %v %v / %v %v, rank %d / %d, base %s / %s",
			fmtAlpha(r), r.Alphas, fmtAlpha(again), again.Alphas, r.Rank, again.Rank, r.Base, again.Base)
	}
	out := filepath.Join(filepath.Dir(path), "out.safetensors")
	back := filepath.Join(filepath.Dir(path), "back.safetensors")
	for _, fam := range fuzzFamilies {
		for _, opt := range []lora.ConvertOptions{
			{To: fam},
			{To: fam, Bare: true, DropUnitAlpha: true, DropForeign: true},
			{To: fam, FoldAlpha: true},
		} {
			r2 := convert(t, path, r.Family, opt, out)
			if r2 == nil {
				continue
			}
			sameLoRA(t, opt, r, r2)
			if opt == (lora.ConvertOptions{To: fam}) {
				undo := lora.ConvertOptions{To: r.Family}
				sameLoRA(t, undo, r, convert(t, out, fam, undo, back))
			}
		}
	}
}

// convert converts the file at in with opt and writes the result to out,
// returning the output's report (nil where folding is refused). With out ""
// it only analyzes in and describes it.
func convert(t *testing.T, in string, from lora.Family, opt lora.ConvertOptions, out string) *lora.Report {
	t.Helper()
	sf, err := safetensors.Open(in)
	if err != nil {
		t.Fatalf("%s: Inspect succeeded but Open failed: %v", filepath.Base(in), err)
	}
	defer sf.Close()
	p, err := lora.Analyze(sf)
	if err != nil {
		t.Fatalf("%s: Inspect succeeded but Analyze failed: %v", filepath.Base(in), err)
	}
	if out == "" {
		return lora.Describe(p, in)
	}
	pl, err := lora.NewPlan(p, from, opt)
	if err != nil {
		if opt.FoldAlpha {
			return nil // lora_B of a non-float dtype cannot be folded into
		}
		t.Fatalf("%s: NewPlan(%+v) of a LoRA with no problems: %v", filepath.Base(in), opt, err)
	}
	src, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var buf bytes.Buffer
	res, err := pl.Write(src, sf.Header.DataStart(), &buf)
	if err != nil {
		t.Fatalf("%s: Write(%+v): %v", filepath.Base(in), opt, err)
	}
	if res.Bytes != int64(buf.Len()) {
		t.Fatalf("%s: Write(%+v): result says %d bytes, wrote %d", filepath.Base(in), opt, res.Bytes, buf.Len())
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := lora.Inspect(out, lora.InspectOptions{})
	if err != nil {
		t.Fatalf("%s converted with %+v: the output does not inspect: %v", filepath.Base(in), opt, err)
	}
	return r
}

func fmtAlpha(r *lora.Report) any {
	if r.Alpha == nil {
		return nil
	}
	return *r.Alpha
}

func sameAlphas(a, b *lora.Report) bool {
	if (a.Alpha == nil) != (b.Alpha == nil) || (a.Alpha != nil && *a.Alpha != *b.Alpha) || len(a.Alphas) != len(b.Alphas) {
		return false
	}
	for k, v := range a.Alphas {
		if w, ok := b.Alphas[k]; !ok || v != w {
			return false
		}
	}
	return true
}

func sameLoRA(t *testing.T, opt lora.ConvertOptions, a, b *lora.Report) {
	t.Helper()
	// Dropping alpha keys can leave foreign keys the majority, which
	// changes the kind; a file without foreign keys stays a Wan LoRA.
	foreign := false
	for _, u := range a.Unusual {
		foreign = foreign || strings.Contains(u, "not recognised")
	}
	if (b.Kind != "wan-lora" && !foreign) || len(b.Problems) > 0 || b.Family != opt.To {
		t.Fatalf("converted with %+v: kind %s family %s problems %v", opt, b.Kind, b.Family, b.Problems)
	}
	if !equalStrings(a.Modules, b.Modules) || !equalStrings(a.Targets, b.Targets) || a.Rank != b.Rank || a.Layers != b.Layers || a.Base != b.Base {
		t.Fatalf("converted with %+v: modules %v→%v targets %v→%v rank %d→%d layers %d→%d base %s→%s",
			opt, a.Modules, b.Modules, a.Targets, b.Targets, a.Rank, b.Rank, a.Layers, b.Layers, a.Base, b.Base)
	}
	if opt.FoldAlpha {
		if !b.UniformScale() {
			t.Fatalf("converted with %+v: scale is not 1 everywhere after folding", opt)
		}
		return
	}
	alphas := func(r *lora.Report) map[string]float64 {
		if r.Alphas != nil {
			return r.Alphas
		}
		return map[string]float64{"*": *r.Alpha}
	}
	aa, ba := alphas(a), alphas(b)
	if len(aa) != len(ba) {
		t.Fatalf("converted with %+v: alphas %v → %v", opt, aa, ba)
	}
	for k, v := range aa {
		w, ok := ba[k]
		// Alphas from diffusers metadata are float64; written as an alpha
		// tensor of the recorded dtype they may round (F32 by default).
		if !ok || (v != w && math.Abs(v-w) > math.Abs(v)*1e-2) {
			t.Fatalf("converted with %+v: alphas %v → %v", opt, aa, ba)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
