package lora

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/daydreamlive/scopectl/internal/safetensors"
)

// ConvertOptions chooses the output spelling and what happens to alpha.
type ConvertOptions struct {
	To Family
	// Bare writes Comfy-family keys without the diffusion_model. prefix.
	Bare bool
	// FoldAlpha multiplies B by alpha/rank and writes no alpha. Every lora_A and lora_B
	// is then written as F32 (F64 stays F64), so the file keeps one dtype: widening
	// bf16/f16 is exact, a value times a power of two stays exact, and any other scale
	// is rounded once, at f32 precision.
	FoldAlpha bool
	// DropUnitAlpha leaves out alpha keys whose value equals the rank (scale 1).
	DropUnitAlpha bool
	// DropForeign leaves out tensors that are not Wan LoRA keys.
	DropForeign bool
	// Progress, if set, is written every output byte (a progress tracker).
	Progress io.Writer
}

// ConvertResult describes a finished conversion. Field names are part of --json.
type ConvertResult struct {
	From    Family   `json:"from"`
	To      Family   `json:"to"`
	Tensors int      `json:"tensors"`
	Bytes   int64    `json:"bytes"`
	SHA256  string   `json:"sha256"`
	Alpha   string   `json:"alpha"` // none | keys | metadata | folded
	Notes   []string `json:"notes"`
}

// entry is one output tensor and where its bytes come from.
type entry struct {
	spec  safetensors.TensorSpec
	src   *safetensors.TensorInfo // copied bit for bit unless fold != 0
	data  []byte                  // synthesized (alpha scalars)
	fold  float64                 // multiply source by this, converting to spec.DType
	srcDT safetensors.DType
}

// Plan is a conversion worked out from the header alone, before any data is read.
type Plan struct {
	progress io.Writer
	entries  []entry
	metadata map[string]string
	Result   ConvertResult
}

// NewPlan decides every output tensor of converting p with opt.
func NewPlan(p *Parsed, from Family, opt ConvertOptions) (*Plan, error) {
	if len(p.Problems) > 0 {
		return nil, fmt.Errorf("cannot convert a damaged LoRA: %s", p.Problems[0])
	}
	if len(p.PairModules()) == 0 {
		return nil, fmt.Errorf("no Wan LoRA pairs to convert")
	}
	st := Style{Family: opt.To, Bare: opt.Bare}
	pl := &Plan{Result: ConvertResult{From: from, To: opt.To, Alpha: "none", Notes: []string{}}, progress: opt.Progress}
	seen := map[string]bool{}
	add := func(e entry) error {
		if seen[e.spec.Name] {
			return fmt.Errorf("two tensors would be named %q", e.spec.Name)
		}
		seen[e.spec.Name] = true
		pl.entries = append(pl.entries, e)
		return nil
	}
	var metaAlpha []*Module
	folded, foldInexact := 0, 0
	for _, name := range p.Order {
		m := p.Modules[name]
		for _, part := range []Part{PartA, PartB, PartAlpha, PartDiff, PartDiffB, PartDoRA} {
			t, ok := m.Parts[part]
			if part == PartAlpha {
				if !m.HasPair() || m.AlphaFrom == "implicit" || opt.FoldAlpha ||
					(opt.DropUnitAlpha && m.Scale() == 1) {
					continue
				}
				if opt.To == Diffusers {
					metaAlpha = append(metaAlpha, m)
					continue
				}
				e := entry{spec: safetensors.TensorSpec{Name: FormatKey(st, name, PartAlpha)}}
				if ok {
					e.spec.DType, e.spec.Shape, e.src = t.DType, t.Shape, &t
				} else { // alpha from metadata: write it back as a scalar of its recorded dtype
					b, err := encodeScalar(m.AlphaDType, m.Alpha)
					if err != nil {
						return nil, err
					}
					e.spec.DType, e.spec.Shape, e.data = m.AlphaDType, []int64{}, b
				}
				pl.Result.Alpha = "keys"
				if err := add(e); err != nil {
					return nil, err
				}
				continue
			}
			if !ok {
				continue
			}
			e := entry{spec: safetensors.TensorSpec{Name: FormatKey(st, name, part), DType: t.DType, Shape: t.Shape}, src: &t, srcDT: t.DType}
			if opt.FoldAlpha && (part == PartA || part == PartB) {
				// Every lora_A and lora_B is written in the folded dtype (F32, F64 stays
				// F64), so the file has one dtype as a LoRA should: widening bf16/f16 to
				// F32 is exact, and only a folded B with a scale that is not a power of
				// two is rounded (once, at f32 precision).
				out, err := foldDType(t.DType)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", t.Name, err)
				}
				scale := 1.0
				if part == PartB && m.Scale() != 1 {
					scale = m.Scale()
					folded++
					if frac, _ := math.Frexp(scale); frac != 0.5 && out != safetensors.F64 {
						foldInexact++
					}
				}
				if out != t.DType || scale != 1 {
					e.spec.DType, e.fold = out, scale
				}
			}
			if err := add(e); err != nil {
				return nil, err
			}
		}
	}
	for _, n := range p.Unrecognized {
		if opt.DropForeign {
			continue
		}
		t, _ := p.Header.Lookup(n)
		if err := add(entry{spec: safetensors.TensorSpec{Name: n, DType: t.DType, Shape: t.Shape}, src: &t, srcDT: t.DType}); err != nil {
			return nil, err
		}
	}
	if len(p.Unrecognized) > 0 {
		if opt.DropForeign {
			pl.Result.Notes = append(pl.Result.Notes, fmt.Sprintf("left out %d keys that are not Wan LoRA keys", len(p.Unrecognized)))
		} else {
			pl.Result.Notes = append(pl.Result.Notes, fmt.Sprintf("copied %d unrecognised keys unchanged", len(p.Unrecognized)))
		}
	}
	if folded > 0 {
		pl.Result.Alpha = "folded"
		msg := fmt.Sprintf("folded alpha/rank into lora_B of %d modules (lora_A and lora_B written as F32)", folded)
		if foldInexact > 0 {
			msg += fmt.Sprintf("; %d scales are not powers of two and were rounded once at f32 precision", foldInexact)
		}
		pl.Result.Notes = append(pl.Result.Notes, msg)
	}
	pl.metadata = map[string]string{}
	for k, v := range p.Header.Metadata {
		if k != AdapterMetadataKey && k != alphaDTypeKey {
			pl.metadata[k] = v
		}
	}
	if _, ok := p.Header.Metadata[AdapterMetadataKey]; ok && opt.To != Diffusers {
		pl.Result.Notes = append(pl.Result.Notes, "diffusers lora_adapter_metadata dropped (its alphas are now keys)")
	}
	if _, ok := pl.metadata["format"]; !ok {
		pl.metadata["format"] = "pt"
	}
	if len(metaAlpha) > 0 {
		js, dt := adapterMetadata(p, metaAlpha)
		pl.metadata[AdapterMetadataKey] = js
		pl.metadata[alphaDTypeKey] = string(dt)
		pl.Result.Alpha = "metadata"
		pl.Result.Notes = append(pl.Result.Notes, "diffusers keys cannot hold alpha: carried in __metadata__.lora_adapter_metadata (PEFT lora_alpha/alpha_pattern), as diffusers writes it")
	}
	if opt.To == Comfy && !opt.Bare && pl.Result.Alpha == "keys" {
		for _, m := range p.PairModules() {
			if m.Scale() != 1 {
				pl.Result.Notes = append(pl.Result.Notes, "ComfyUI honours these alpha keys but Scope ignores alpha on diffusion_model. files; `scopectl lora install` writes a form Scope applies exactly")
				break
			}
		}
	}
	pl.Result.Tensors = len(pl.entries)
	return pl, nil
}

// adapterMetadata builds the JSON diffusers stores under lora_adapter_metadata for a
// transformer-level PEFT LoraConfig: the most common rank/alpha plus patterns for the rest.
func adapterMetadata(p *Parsed, mods []*Module) (string, safetensors.DType) {
	pairs := p.PairModules()
	ranks, alphas := map[int]int{}, map[float64]int{}
	for _, m := range pairs {
		ranks[m.Rank]++
		alphas[m.Alpha]++
	}
	r := mostCommon(ranks)
	var a float64
	n := -1
	for v, c := range alphas {
		if c > n || (c == n && v > a) {
			a, n = v, c
		}
	}
	rankPat, alphaPat := map[string]int{}, map[string]float64{}
	var targets []string
	for _, m := range pairs {
		dn := diffusersName(m.Name)
		targets = append(targets, dn)
		if m.Rank != r {
			rankPat[dn] = m.Rank
		}
		if m.Alpha != a {
			alphaPat[dn] = m.Alpha
		}
	}
	sort.Strings(targets)
	cfg := map[string]any{
		"transformer.r": r, "transformer.lora_alpha": a,
		"transformer.rank_pattern": rankPat, "transformer.alpha_pattern": alphaPat,
		"transformer.target_modules": targets, "transformer.peft_type": "LORA",
		"transformer.use_dora": false, "transformer.bias": "none",
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	_ = enc.Encode(cfg) // map keys are sorted, as Python's sort_keys=True
	return string(bytes.TrimSpace(buf.Bytes())), mods[0].AlphaDType
}

func foldDType(dt safetensors.DType) (safetensors.DType, error) {
	switch dt {
	case safetensors.BF16, safetensors.F16, safetensors.F32:
		return safetensors.F32, nil
	case safetensors.F64:
		return safetensors.F64, nil
	}
	return "", fmt.Errorf("cannot fold alpha into a %s tensor", dt)
}

// Write streams the converted file to w: header first, then every tensor copied from
// src in plan order. Memory use is a few buffers, whatever the file size.
func (pl *Plan) Write(src io.ReaderAt, dataStart int64, w io.Writer) (*ConvertResult, error) {
	specs := make([]safetensors.TensorSpec, len(pl.entries))
	for i, e := range pl.entries {
		specs[i] = e.spec
	}
	h := sha256.New()
	sinks := []io.Writer{w, h}
	if pl.progress != nil {
		sinks = append(sinks, pl.progress)
	}
	cw := &countWriter{w: io.MultiWriter(sinks...)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	sw, err := safetensors.NewWriter(bw, specs, pl.metadata)
	if err != nil {
		return nil, err
	}
	var fr foldReader // one for every folded tensor, so its buffers are allocated once per file
	for _, e := range pl.entries {
		var r io.Reader
		switch {
		case e.data != nil:
			r = bytes.NewReader(e.data)
		case e.fold != 0:
			fr = foldReader{src: io.NewSectionReader(src, dataStart+e.src.Begin, e.src.ByteLen()), in: e.srcDT, out: e.spec.DType, scale: e.fold,
				inBuf: fr.inBuf, outBuf: fr.outBuf}
			r = &fr
		default:
			r = io.NewSectionReader(src, dataStart+e.src.Begin, e.src.ByteLen())
		}
		if err := sw.WriteTensor(e.spec.Name, r); err != nil {
			return nil, err
		}
	}
	if err := sw.Close(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	res := pl.Result
	res.Bytes = cw.n
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	return &res, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// foldReader reads float elements of dtype in, multiplies each by scale and yields
// them as dtype out (F32 or F64), little-endian.
type foldReader struct {
	src     io.Reader
	in, out safetensors.DType
	scale   float64
	inBuf   []byte
	outBuf  []byte // reused for every chunk, so memory and GC work do not grow with the tensor
	pending []byte
	err     error
}

func (f *foldReader) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		if f.inBuf == nil {
			f.inBuf = make([]byte, 256<<10)
		}
		isz := f.in.Size()
		n, err := io.ReadFull(f.src, f.inBuf)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = io.EOF
		}
		f.err = err
		n -= n % isz
		if need := n / isz * f.out.Size(); cap(f.outBuf) < need {
			f.outBuf = make([]byte, 0, need)
		}
		out := f.outBuf[:0]
		for i := 0; i < n; i += isz {
			var v float64
			b := f.inBuf[i:]
			switch f.in {
			case safetensors.BF16:
				v = float64(bf16ToF32(binary.LittleEndian.Uint16(b)))
			case safetensors.F16:
				v = float64(f16ToF32(binary.LittleEndian.Uint16(b)))
			case safetensors.F32:
				v = float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
			case safetensors.F64:
				v = math.Float64frombits(binary.LittleEndian.Uint64(b))
			}
			v *= f.scale
			if f.out == safetensors.F64 {
				out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
			} else {
				out = binary.LittleEndian.AppendUint32(out, math.Float32bits(float32(v)))
			}
		}
		f.outBuf, f.pending = out, out
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}
