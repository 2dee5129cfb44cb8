package lora

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/daydreamlive/scopectl/internal/safetensors"
)

// Module is one adapted layer of the model, gathered from all its tensors.
type Module struct {
	Name    string
	Parts   map[Part]safetensors.TensorInfo
	Family  Family
	Rank    int     // rows of A (0 when the module has no A/B pair)
	In, Out int64   // features of the adapted layer, from A's columns and B's rows
	Alpha   float64 // effective alpha; equals Rank when the file states none
	// AlphaFrom says where Alpha came from: "key" (an alpha tensor), "metadata"
	// (diffusers lora_adapter_metadata), or "implicit" (none stated: alpha = rank).
	AlphaFrom  string
	AlphaDType safetensors.DType // dtype of the alpha tensor, or the one recorded in metadata
}

// Scale is the factor the LoRA delta B@A is multiplied by: alpha / rank.
func (m *Module) Scale() float64 {
	if m.Rank == 0 {
		return 1
	}
	return m.Alpha / float64(m.Rank)
}

// HasPair reports whether the module has both A and B.
func (m *Module) HasPair() bool {
	_, a := m.Parts[PartA]
	_, b := m.Parts[PartB]
	return a && b
}

// Parsed is a safetensors header read as a Wan LoRA.
type Parsed struct {
	Header       *safetensors.Header
	Modules      map[string]*Module
	Order        []string // module names in natural order
	Families     map[Family]int
	Prefixes     map[string]int
	UpDown       bool     // any key spelled lora_down/lora_up
	Unrecognized []string // tensor names that are not Wan LoRA keys
	Problems     []string // structural errors: A without B, rank mismatch, non-scalar alpha
}

// Parse sorts every tensor of h into modules. It reads nothing: alpha values need
// LoadAlphas.
func Parse(h *safetensors.Header) *Parsed {
	p := &Parsed{Header: h, Modules: map[string]*Module{}, Families: map[Family]int{}, Prefixes: map[string]int{}}
	for _, t := range h.Tensors {
		k, ok := ParseKey(t.Name)
		if !ok {
			p.Unrecognized = append(p.Unrecognized, t.Name)
			continue
		}
		m := p.Modules[k.Module]
		if m == nil {
			m = &Module{Name: k.Module, Parts: map[Part]safetensors.TensorInfo{}, Family: k.Family}
			p.Modules[k.Module] = m
			p.Order = append(p.Order, k.Module)
		}
		if prev, dup := m.Parts[k.Part]; dup {
			p.Problems = append(p.Problems, fmt.Sprintf("%s and %s are the same %s of module %s", prev.Name, t.Name, k.Part, k.Module))
			continue
		}
		m.Parts[k.Part] = t
		p.Families[k.Family]++
		p.Prefixes[k.Prefix]++
		p.UpDown = p.UpDown || k.UpDown
	}
	sort.Strings(p.Unrecognized)
	sortModules(p.Order)
	for _, name := range p.Order {
		p.checkModule(p.Modules[name])
	}
	return p
}

func (p *Parsed) checkModule(m *Module) {
	a, hasA := m.Parts[PartA]
	b, hasB := m.Parts[PartB]
	switch {
	case hasA && !hasB:
		p.Problems = append(p.Problems, fmt.Sprintf("%s has no matching lora_B/lora_up", a.Name))
		return
	case hasB && !hasA:
		p.Problems = append(p.Problems, fmt.Sprintf("%s has no matching lora_A/lora_down", b.Name))
		return
	case !hasA:
		if al, ok := m.Parts[PartAlpha]; ok {
			p.Problems = append(p.Problems, fmt.Sprintf("%s has no lora_A/lora_B pair", al.Name))
		}
		return
	}
	if len(a.Shape) < 2 || len(b.Shape) < 2 {
		p.Problems = append(p.Problems, fmt.Sprintf("%s shape %v / %s shape %v: a LoRA pair needs 2-D (or conv) tensors", a.Name, a.Shape, b.Name, b.Shape))
		return
	}
	if a.Shape[0] != b.Shape[1] {
		p.Problems = append(p.Problems, fmt.Sprintf("%s rank %d does not match %s rank %d", a.Name, a.Shape[0], b.Name, b.Shape[1]))
		return
	}
	if a.Shape[0] <= 0 {
		p.Problems = append(p.Problems, fmt.Sprintf("%s has rank 0", a.Name))
		return
	}
	m.Rank = int(a.Shape[0])
	m.In = 1
	for _, d := range a.Shape[1:] {
		m.In *= d
	}
	m.Out = b.Shape[0]
	m.Alpha, m.AlphaFrom = float64(m.Rank), "implicit"
	if al, ok := m.Parts[PartAlpha]; ok && al.NumElements() != 1 {
		p.Problems = append(p.Problems, fmt.Sprintf("%s has shape %v; alpha must be a scalar", al.Name, al.Shape))
	}
}

// PairModules returns the modules that have an A/B pair, in natural order.
func (p *Parsed) PairModules() []*Module {
	var out []*Module
	for _, n := range p.Order {
		if m := p.Modules[n]; m.HasPair() {
			out = append(out, m)
		}
	}
	return out
}

// LoadAlphas fills in alpha values: from alpha tensors (read with as few ReadAt calls as
// their layout allows: adjacent scalars are read in one go), else from diffusers'
// lora_adapter_metadata. r reads the whole safetensors file.
func (p *Parsed) LoadAlphas(r io.ReaderAt) error {
	type want struct {
		m *Module
		t safetensors.TensorInfo
	}
	var ws []want
	for _, m := range p.PairModules() {
		if t, ok := m.Parts[PartAlpha]; ok && t.NumElements() == 1 {
			ws = append(ws, want{m, t})
		}
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].t.Begin < ws[j].t.Begin })
	base := p.Header.DataStart()
	const maxGap = 64 << 10
	for i := 0; i < len(ws); {
		j := i + 1
		for j < len(ws) && ws[j].t.Begin-ws[j-1].t.End <= maxGap {
			j++
		}
		lo, hi := ws[i].t.Begin, ws[j-1].t.End
		buf := make([]byte, hi-lo) // bounded: scalars with gaps of at most maxGap
		if _, err := r.ReadAt(buf, base+lo); err != nil {
			return fmt.Errorf("reading alpha %s: %w", ws[i].t.Name, err)
		}
		for _, w := range ws[i:j] {
			v, err := scalar(w.t.DType, buf[w.t.Begin-lo:w.t.End-lo])
			if err != nil {
				return fmt.Errorf("%s: %w", w.t.Name, err)
			}
			if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 {
				p.Problems = append(p.Problems, fmt.Sprintf("%s is %v; alpha must be a finite non-zero number", w.t.Name, v))
				continue
			}
			w.m.Alpha, w.m.AlphaFrom, w.m.AlphaDType = v, "key", w.t.DType
		}
		i = j
	}
	p.loadMetadataAlphas()
	return nil
}

// AdapterMetadataKey is where diffusers stores the PEFT LoraConfig of a LoRA file.
const AdapterMetadataKey = "lora_adapter_metadata"

// alphaDTypeKey records the dtype of the alpha tensors a diffusers file was converted
// from, so that converting back gives bit-identical alpha tensors.
const alphaDTypeKey = "scopectl_alpha_dtype"

func (p *Parsed) loadMetadataAlphas() {
	raw, ok := p.Header.Metadata[AdapterMetadataKey]
	if !ok {
		return
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		p.Problems = append(p.Problems, fmt.Sprintf("__metadata__.%s is not a JSON object: %v", AdapterMetadataKey, err))
		return
	}
	get := func(k string) json.RawMessage {
		if v, ok := cfg["transformer."+k]; ok {
			return v
		}
		return cfg[k]
	}
	var alpha float64
	hasAlpha := json.Unmarshal(get("lora_alpha"), &alpha) == nil && alpha != 0
	var pattern map[string]float64
	_ = json.Unmarshal(get("alpha_pattern"), &pattern)
	patOrder := objectKeys(get("alpha_pattern"))
	dt := safetensors.DType(p.Header.Metadata[alphaDTypeKey])
	for _, m := range p.PairModules() {
		if m.AlphaFrom == "key" {
			continue
		}
		v, found := pattern[diffusersName(m.Name)]
		if !found {
			// PEFT matches patterns as suffixes of module names, and the first
			// matching one in the config's order wins.
			for _, pat := range patOrder {
				if pv, ok := pattern[pat]; ok && strings.HasSuffix(diffusersName(m.Name), "."+pat) {
					v, found = pv, true
					break
				}
			}
		}
		if !found && hasAlpha {
			v, found = alpha, true
		}
		if found && v != 0 {
			m.Alpha, m.AlphaFrom, m.AlphaDType = v, "metadata", alphaDType(dt, v)
		}
	}
}

// alphaDType is the dtype an alpha from metadata is written back in as a
// tensor: the recorded dtype dt when it holds v as a finite non-zero number
// (exactly, for integer dtypes), else F32, else F64.
func alphaDType(dt safetensors.DType, v float64) safetensors.DType {
	if b, err := encodeScalar(dt, v); err == nil {
		w, _ := scalar(dt, b)
		if w != 0 && !math.IsInf(w, 0) && (w == v || (dt != safetensors.I64 && dt != safetensors.I32)) {
			return dt
		}
	}
	if w := float32(v); w != 0 && !math.IsInf(float64(w), 0) {
		return safetensors.F32
	}
	return safetensors.F64
}

// objectKeys returns the keys of a JSON object in document order (a repeated
// key keeps its first position, as in a Python dict), or nil if raw is not an
// object.
func objectKeys(raw json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var keys []string
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return keys
		}
		if k, _ := t.(string); !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// scalar decodes one element of a float or integer dtype.
func scalar(dt safetensors.DType, b []byte) (float64, error) {
	switch dt {
	case safetensors.F32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), nil
	case safetensors.F64:
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	case safetensors.BF16:
		return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16)), nil
	case safetensors.F16:
		return float64(f16ToF32(binary.LittleEndian.Uint16(b))), nil
	case safetensors.I64:
		return float64(int64(binary.LittleEndian.Uint64(b))), nil
	case safetensors.I32:
		return float64(int32(binary.LittleEndian.Uint32(b))), nil
	}
	return 0, fmt.Errorf("alpha of dtype %s is not supported (want F32, F16, BF16, F64 or an integer)", dt)
}

// encodeScalar is the inverse of scalar (integer dtypes truncate v).
func encodeScalar(dt safetensors.DType, v float64) ([]byte, error) {
	switch dt {
	case safetensors.F32:
		return binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(v))), nil
	case safetensors.F64:
		return binary.LittleEndian.AppendUint64(nil, math.Float64bits(v)), nil
	case safetensors.BF16:
		return binary.LittleEndian.AppendUint16(nil, f32ToBF16(float32(v))), nil
	case safetensors.F16:
		return binary.LittleEndian.AppendUint16(nil, f32ToF16(float32(v))), nil
	case safetensors.I64:
		return binary.LittleEndian.AppendUint64(nil, uint64(int64(v))), nil
	case safetensors.I32:
		return binary.LittleEndian.AppendUint32(nil, uint32(int32(v))), nil
	}
	return nil, fmt.Errorf("cannot write alpha as %s", dt)
}
