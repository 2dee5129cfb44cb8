package lora_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/safetensors"
)

func gen(t testing.TB, s loratest.Spec) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.safetensors")
	if err := loratest.Write(p, s); err != nil {
		t.Fatal(err)
	}
	return p
}

func inspect(t testing.TB, path string) *lora.Report {
	t.Helper()
	r, err := lora.Inspect(path, lora.InspectOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInspectFamiliesAndBases(t *testing.T) {
	for _, fam := range []lora.Family{lora.Comfy, lora.Diffusers, lora.Kohya} {
		for _, base := range []string{lora.BaseT2V14B, lora.BaseT2V1_3B, lora.BaseI2V14B} {
			t.Run(string(fam)+"/"+base, func(t *testing.T) {
				alpha := 0.0
				if fam != lora.Comfy {
					alpha = 2
				}
				r := inspect(t, gen(t, loratest.Spec{Base: base, Family: fam, Rank: 4, Alpha: alpha}))
				if r.Kind != "wan-lora" || r.Family != fam || r.Base != base {
					t.Fatalf("kind=%s family=%s base=%s (%s)", r.Kind, r.Family, r.Base, r.BaseReason)
				}
				if r.Rank != 4 || r.Ranks != nil {
					t.Fatalf("rank %d %v", r.Rank, r.Ranks)
				}
				want := 4.0
				if alpha != 0 {
					want = alpha
				}
				if r.Alpha == nil || *r.Alpha != want {
					t.Fatalf("alpha %v want %v (from %s)", r.Alpha, want, r.AlphaFrom)
				}
				a, _ := lora.ArchOf(base)
				if r.Layers != 3 || r.Blocks[2] != a.Layers-1 {
					t.Fatalf("layers %d blocks %v", r.Layers, r.Blocks)
				}
				wantT := "cross_attn,ffn,self_attn"
				if base == lora.BaseI2V14B {
					wantT = "cross_attn,cross_attn_img,ffn,self_attn"
				}
				if strings.Join(r.Targets, ",") != wantT {
					t.Fatalf("targets %v", r.Targets)
				}
				if r.DType != "BF16" || len(r.SHA256) != 64 || len(r.Problems) != 0 || len(r.Unusual) != 0 {
					t.Fatalf("dtype %s sha %q problems %v unusual %v", r.DType, r.SHA256, r.Problems, r.Unusual)
				}
				if ready := fam == lora.Comfy || (fam == lora.Kohya && base != lora.BaseI2V14B); r.ScopeReady != ready {
					t.Fatalf("scope_ready=%v issues=%v", r.ScopeReady, r.ScopeIssues)
				}
			})
		}
	}
}

func TestInspectT2V14BOnlySelfAttnSaysAmbiguity(t *testing.T) {
	r := inspect(t, gen(t, loratest.Spec{Modules: []string{"self_attn.q", "self_attn.v"}}))
	if r.Base != lora.BaseT2V14B || !strings.Contains(r.BaseReason, lora.BaseI2V14B) {
		t.Fatalf("%s: %s", r.Base, r.BaseReason)
	}
}

func TestInspectMetadataAndParams(t *testing.T) {
	r := inspect(t, gen(t, loratest.Spec{Base: lora.BaseT2V1_3B, Blocks: []int{5}, Modules: []string{"ffn.0"}, Rank: 8}))
	if r.Params != 8*1536+8960*8 || r.Tensors != 2 {
		t.Fatalf("params %d tensors %d", r.Params, r.Tensors)
	}
	if r.Metadata["ss_base_model_version"] != "wan_2.1" {
		t.Fatalf("metadata %v", r.Metadata)
	}
	if fi, _ := os.Stat(r.Path); fi.Size() != r.Bytes {
		t.Fatalf("bytes %d vs %d", r.Bytes, fi.Size())
	}
}

func TestInspectUnusual(t *testing.T) {
	r := inspect(t, gen(t, loratest.Spec{DoRA: true, Diff: true, Base: lora.BaseT2V1_3B}))
	joined := strings.Join(r.Unusual, "; ")
	if !strings.Contains(joined, "DoRA") || !strings.Contains(joined, "diff") || r.ScopeReady {
		t.Fatalf("unusual %v scope %v %v", r.Unusual, r.ScopeReady, r.ScopeIssues)
	}
	ranks := inspect(t, gen(t, loratest.Spec{RankOf: func(m string) int {
		if strings.HasSuffix(m, "ffn.0") {
			return 8
		}
		return 4
	}}))
	if ranks.Ranks == nil || ranks.Ranks["blocks.0.ffn.0"] != 8 || ranks.Rank != 4 {
		t.Fatalf("ranks %v rank %d", ranks.Ranks, ranks.Rank)
	}
}

// writeRaw writes a safetensors file whose tensors are all zero, from names and shapes.
func writeRaw(t *testing.T, tensors map[string][]int64) string {
	t.Helper()
	var specs []safetensors.TensorSpec
	for n, s := range tensors {
		specs = append(specs, safetensors.TensorSpec{Name: n, DType: safetensors.F16, Shape: s})
	}
	var buf bytes.Buffer
	w, err := safetensors.NewWriter(&buf, specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		n := int64(2)
		for _, d := range s.Shape {
			n *= d
		}
		if err := w.WriteTensor(s.Name, bytes.NewReader(make([]byte, n))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "raw.safetensors")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInspectForeignFiles(t *testing.T) {
	sdxl := writeRaw(t, map[string][]int64{
		"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": {4, 640},
		"lora_unet_input_blocks_4_1_proj_in.lora_up.weight":   {640, 4},
		"lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha":  {},
	})
	r := inspect(t, sdxl)
	if r.Kind != "lora" || !strings.Contains(r.Model, "XL") || r.Base != lora.BaseUnknown {
		t.Fatalf("sdxl: %+v", r)
	}
	ckpt := writeRaw(t, map[string][]int64{"blocks.0.self_attn.q.weight": {8, 8}, "blocks.0.self_attn.q.bias": {8}})
	if r := inspect(t, ckpt); r.Kind != "checkpoint" || !strings.Contains(r.BaseReason, "checkpoint") {
		t.Fatalf("checkpoint: %+v", r)
	}
	wan22 := writeRaw(t, map[string][]int64{
		"diffusion_model.blocks.0.self_attn.q.lora_A.weight": {4, 3072},
		"diffusion_model.blocks.0.self_attn.q.lora_B.weight": {3072, 4},
	})
	if r := inspect(t, wan22); r.Base != lora.BaseUnknown || !strings.Contains(r.BaseReason, "3072") {
		t.Fatalf("wan2.2: %s %s", r.Base, r.BaseReason)
	}
	tooDeep := writeRaw(t, map[string][]int64{
		"diffusion_model.blocks.35.self_attn.q.lora_A.weight": {4, 1536},
		"diffusion_model.blocks.35.self_attn.q.lora_B.weight": {1536, 4},
	})
	if r := inspect(t, tooDeep); r.Base != lora.BaseUnknown || !strings.Contains(r.BaseReason, "block 35") {
		t.Fatalf("deep: %s %s", r.Base, r.BaseReason)
	}
	broken := writeRaw(t, map[string][]int64{
		"diffusion_model.blocks.0.self_attn.q.lora_A.weight": {4, 1536},
		"diffusion_model.blocks.0.self_attn.k.lora_B.weight": {1536, 4},
	})
	if r := inspect(t, broken); len(r.Problems) != 2 {
		t.Fatalf("broken: %v", r.Problems)
	}
}

func TestPickleRefused(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"a.pt":   append([]byte("PK\x03\x04"), make([]byte, 64)...),
		"b.ckpt": append([]byte{0x80, 0x02}, make([]byte, 64)...),
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		_, err := lora.Inspect(p, lora.InspectOptions{})
		if err == nil || !strings.Contains(err.Error(), "pickle") {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// canon reads every tensor of a converted file keyed by canonical module/part.
func canon(t *testing.T, path string) (map[string][]byte, *lora.Parsed) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := lora.Analyze(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range p.Order {
		for part, ti := range p.Modules[n].Parts {
			b, err := f.ReadTensor(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			out[n+"/"+part.String()+"/"+string(ti.DType)] = b
		}
	}
	return out, p
}

func TestConvertRoundTripsBitForBit(t *testing.T) {
	fams := []lora.Family{lora.Comfy, lora.Diffusers, lora.Kohya}
	for _, from := range fams {
		for _, to := range fams {
			t.Run(string(from)+"->"+string(to), func(t *testing.T) {
				src := gen(t, loratest.Spec{Family: from, Base: lora.BaseI2V14B, Alpha: 2, AlphaDType: safetensors.BF16, Blocks: []int{0, 39}, Seed: 7})
				mid := filepath.Join(t.TempDir(), "mid.safetensors")
				back := filepath.Join(t.TempDir(), "back.safetensors")
				res, err := lora.ConvertFile(src, mid, lora.ConvertOptions{To: to})
				if err != nil {
					t.Fatal(err)
				}
				if r := inspect(t, mid); r.Family != to || r.Base != lora.BaseI2V14B || r.Alpha == nil || *r.Alpha != 2 {
					t.Fatalf("mid: family %s base %s alpha %v", r.Family, r.Base, r.Alpha)
				}
				if _, err := lora.ConvertFile(mid, back, lora.ConvertOptions{To: from}); err != nil {
					t.Fatal(err)
				}
				a, _ := canon(t, src)
				b, _ := canon(t, back)
				if len(a) != len(b) {
					t.Fatalf("tensor count %d vs %d", len(a), len(b))
				}
				for k, v := range a {
					if !bytes.Equal(v, b[k]) {
						t.Fatalf("%s differs after %s->%s->%s", k, from, to, from)
					}
				}
				if to == lora.Diffusers && from != lora.Diffusers && res.Alpha != "metadata" {
					t.Fatalf("alpha mode %s", res.Alpha)
				}
			})
		}
	}
}

// effectiveScope computes what Daydream Scope applies for each module: B × factor, where
// factor is alpha/rank only when Scope rewrites the file (wan2_1/lora/utils.py
// standardize_lora_for_peft) and 1 for files already in diffusion_model. form. Diffusers
// keys match nothing and are left out.
func effectiveScope(t *testing.T, path string) (map[string][]float64, map[string][]byte) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rewrite := false
	prefixed := false
	for _, ti := range f.Header.Tensors {
		n := ti.Name
		if strings.Contains(n, ".lora_up.") || strings.Contains(n, ".lora_down.") || strings.HasPrefix(n, "lora_unet_") {
			rewrite = true
		}
		if strings.HasPrefix(n, "diffusion_model.") {
			prefixed = true
		}
	}
	if !prefixed {
		rewrite = true
	}
	bs, as := map[string][]float64{}, map[string][]byte{}
	for _, ti := range f.Header.Tensors {
		if !strings.HasSuffix(ti.Name, ".lora_B.weight") && !strings.HasSuffix(ti.Name, ".lora_up.weight") {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(ti.Name, ".lora_B.weight"), ".lora_up.weight")
		if strings.HasPrefix(base, "transformer.") {
			continue
		}
		aName := base + ".lora_A.weight"
		if strings.HasSuffix(ti.Name, ".lora_up.weight") {
			aName = base + ".lora_down.weight"
		}
		aInfo, _ := f.Header.Lookup(aName)
		scale := 1.0
		if al, ok := f.Header.Lookup(base + ".alpha"); ok && rewrite {
			b, _ := f.ReadTensor(al.Name)
			scale = decode(al.DType, b)[0] / float64(aInfo.Shape[0])
		}
		b, _ := f.ReadTensor(ti.Name)
		vals := decode(ti.DType, b)
		for i := range vals {
			vals[i] *= scale
		}
		key := strings.TrimPrefix(base, "diffusion_model.")
		bs[key] = vals
		as[key], _ = f.ReadTensor(aName)
	}
	return bs, as
}

func decode(dt safetensors.DType, b []byte) []float64 {
	var out []float64
	for i := 0; i < len(b); i += dt.Size() {
		switch dt {
		case safetensors.BF16:
			out = append(out, float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[i:]))<<16)))
		case safetensors.F32:
			out = append(out, float64(math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))))
		}
	}
	return out
}

func TestScopeFormHasTrainedEffect(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec loratest.Spec
	}{
		{"ai-toolkit", loratest.Spec{Family: lora.Comfy}},
		{"kohya-alpha", loratest.Spec{Family: lora.Kohya, Alpha: 1, Rank: 4}},
		{"kohya-alpha=rank", loratest.Spec{Family: lora.Kohya, Alpha: 4, Rank: 4}},
		{"diffusers-alpha", loratest.Spec{Family: lora.Diffusers, Alpha: 3, Rank: 4}},
		{"comfy-alpha-ignored-by-scope", loratest.Spec{Family: lora.Comfy, Alpha: 8, Rank: 4}},
		{"i2v-kohya", loratest.Spec{Family: lora.Kohya, Alpha: 2, Base: lora.BaseI2V14B}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Blocks = []int{0, 3}
			tc.spec.Base = map[bool]string{true: tc.spec.Base, false: lora.BaseT2V1_3B}[tc.spec.Base != ""]
			src := gen(t, tc.spec)
			f, _ := safetensors.Open(src)
			p, err := lora.Analyze(f)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "scope.safetensors")
			if _, err := lora.WriteConverted(f, p, lora.Describe(p, src).Family, lora.ScopeOptions(p), out); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if r := inspect(t, out); !r.ScopeReady {
				t.Fatalf("installed form not scope-ready: %v", r.ScopeIssues)
			}
			gotB, gotA := effectiveScope(t, out)
			srcCanon, sp := canon(t, src)
			if len(gotB) != len(sp.PairModules()) {
				t.Fatalf("scope sees %d pairs, source has %d", len(gotB), len(sp.PairModules()))
			}
			for _, m := range sp.PairModules() {
				wantA := srcCanon[m.Name+"/lora_A/BF16"]
				if !bytes.Equal(gotA[m.Name], wantA) {
					t.Fatalf("%s: A differs", m.Name)
				}
				wantB := decode(safetensors.BF16, srcCanon[m.Name+"/lora_B/BF16"])
				for i := range wantB {
					if gotB[m.Name][i] != wantB[i]*m.Scale() {
						t.Fatalf("%s: B[%d] %v want %v (scale %v)", m.Name, i, gotB[m.Name][i], wantB[i]*m.Scale(), m.Scale())
					}
				}
			}
		})
	}
}

func TestFoldAlpha(t *testing.T) {
	src := gen(t, loratest.Spec{Family: lora.Kohya, Alpha: 3, Rank: 4, Base: lora.BaseT2V1_3B, Blocks: []int{1}, Modules: []string{"self_attn.q"}})
	out := filepath.Join(t.TempDir(), "f.safetensors")
	res, err := lora.ConvertFile(src, out, lora.ConvertOptions{To: lora.Comfy, FoldAlpha: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Alpha != "folded" || len(res.Notes) == 0 {
		t.Fatalf("%+v", res)
	}
	r := inspect(t, out)
	if r.Alpha == nil || *r.Alpha != 4 || r.AlphaFrom != "implicit" {
		t.Fatalf("alpha %v from %s", r.Alpha, r.AlphaFrom)
	}
	sc, _ := canon(t, src)
	oc, _ := canon(t, out)
	in := decode(safetensors.BF16, sc["blocks.1.self_attn.q/lora_B/BF16"])
	got := decode(safetensors.F32, oc["blocks.1.self_attn.q/lora_B/F32"])
	for i := range in {
		if want := float64(float32(in[i] * 0.75)); got[i] != want {
			t.Fatalf("B[%d]=%v want %v", i, got[i], want)
		}
	}
	// lora_A is widened to F32 exactly, so the file has one dtype and inspect agrees.
	inA := decode(safetensors.BF16, sc["blocks.1.self_attn.q/lora_A/BF16"])
	gotA := decode(safetensors.F32, oc["blocks.1.self_attn.q/lora_A/F32"])
	if len(gotA) != len(inA) {
		t.Fatalf("lora_A: %d values, want %d", len(gotA), len(inA))
	}
	for i := range inA {
		if gotA[i] != inA[i] {
			t.Fatalf("A[%d]=%v want %v", i, gotA[i], inA[i])
		}
	}
	if r.DType != "F32" || len(r.Unusual) != 0 {
		t.Fatalf("folded file: dtype %s, unusual %v", r.DType, r.Unusual)
	}
}

func TestConvertRefusesDamagedFile(t *testing.T) {
	p := writeRaw(t, map[string][]int64{"diffusion_model.blocks.0.self_attn.q.lora_A.weight": {4, 1536}})
	_, err := lora.ConvertFile(p, filepath.Join(t.TempDir(), "o.safetensors"), lora.ConvertOptions{To: lora.Kohya})
	if err == nil || !strings.Contains(err.Error(), "lora_B") {
		t.Fatal(err)
	}
}

func TestParseKeyTable(t *testing.T) {
	for name, want := range map[string]string{
		"diffusion_model.blocks.12.cross_attn.k_img.lora_A.weight":  "blocks.12.cross_attn.k_img",
		"transformer.blocks.3.attn1.to_out.0.lora_B.weight":         "blocks.3.self_attn.o",
		"transformer.blocks.3.attn2.add_v_proj.lora_B.weight":       "blocks.3.cross_attn.v_img",
		"lora_unet_blocks_7_ffn_0.lora_down.weight":                 "blocks.7.ffn.0",
		"lora_unet_blocks_7_cross_attn_k_img.alpha":                 "blocks.7.cross_attn.k_img",
		"transformer.condition_embedder.time_proj.lora_A.weight":    "time_projection.1",
		"base_model.model.blocks.0.ffn.net.2.lora_A.default.weight": "blocks.0.ffn.2",
		"blocks.0.self_attn.q.lora_A.weight":                        "blocks.0.self_attn.q",
	} {
		k, ok := lora.ParseKey(name)
		if !ok || k.Module != want {
			t.Errorf("%s: %q %v", name, k.Module, ok)
		}
		for _, fam := range []lora.Family{lora.Comfy, lora.Diffusers, lora.Kohya} {
			back, ok := lora.ParseKey(lora.FormatKey(lora.Style{Family: fam}, k.Module, k.Part))
			if !ok || back.Module != k.Module || back.Part != k.Part || back.Family != fam {
				t.Errorf("%s via %s: %+v", name, fam, back)
			}
		}
	}
	for _, bad := range []string{"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", "blocks.0.self_attn.q.weight", "x.lora_A.weight", ".alpha"} {
		if k, ok := lora.ParseKey(bad); ok {
			t.Errorf("%s parsed as %+v", bad, k)
		}
	}
}

func TestHalfFloatHelpersViaFold(t *testing.T) {
	src := gen(t, loratest.Spec{Family: lora.Kohya, Alpha: 2, Rank: 4, DType: safetensors.F16, Base: lora.BaseT2V1_3B, Blocks: []int{0}, Modules: []string{"self_attn.k"}})
	out := filepath.Join(t.TempDir(), "f.safetensors")
	if _, err := lora.ConvertFile(src, out, lora.ConvertOptions{To: lora.Diffusers, FoldAlpha: true}); err != nil {
		t.Fatal(err)
	}
	// Folding writes every lora_A and lora_B as F32, so the file has one dtype and
	// inspect finds nothing unusual about it.
	if r := inspect(t, out); r.Family != lora.Diffusers || r.DType != "F32" || len(r.Unusual) != 0 {
		t.Fatalf("%s %s %v", r.Family, r.DType, r.Unusual)
	}
}
