package aitk

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// MemoryEstimate is a rough figure of the GPU memory a Wan training process
// needs, by phase. It is a planning number, not a measurement: it is meant to
// catch settings that cannot fit (a 14B model unquantized on 24 GB, 81
// frames at 720p) and to pick presets, and it errs high.
//
// The model, in GiB (2^30 bytes):
//
//	weights     transformer params × bytes per param (bf16 2, 8-bit qtypes 1,
//	            uintN N/8, +0.3 GiB for an accuracy-recovery adapter); Wan 2.2
//	            A14B has two experts, only one resident with low_vram;
//	            layer_offloading keeps (1-percent) of it plus 1 GiB on the GPU
//	text enc.   UMT5-XXL, 5.7e9 params, only while training when neither
//	            unload_text_encoder nor cache_text_embeddings is set
//	LoRA state  rank × (in+out) for every targeted linear (q,k,v,o of self- and
//	            cross-attention, ffn.0, ffn.2) × 12 bytes (fp32 weight and
//	            gradient, 8-bit Adam), +4 with EMA, × experts trained
//	activations tokens = (⌊(frames−1)/4⌋+1) × (res/16)² (res/32 for 5B);
//	            with gradient checkpointing tokens × dim × 2 bytes × layers
//	            plus one block's working set tokens × (2·ffn + 8·dim) × 2 bytes,
//	            without it 12× the checkpointed part; × batch size; the
//	            largest dataset resolution and frame count count
//	load        without low_vram the transformer is quantized on the GPU from
//	            bf16, and the text encoder is loaded in bf16 before it is
//	            quantized
//	sampling    weights + the transformer's working set for the sample's
//	            tokens + VAE decode (width × height × 384 × 8 bytes, ÷4 tiled
//	            with low_vram)
//	overhead    1.5 GiB (CUDA context, allocator fragmentation), VAE 0.5 GiB
type MemoryEstimate struct {
	GiB       float64      `json:"gib"` // the largest phase
	TrainGiB  float64      `json:"train_gib"`
	LoadGiB   float64      `json:"load_gib"`
	SampleGiB float64      `json:"sample_gib"`
	Parts     []MemoryPart `json:"parts"` // the training phase, by part
	Notes     []string     `json:"notes,omitempty"`
	Size      string       `json:"size,omitempty"` // transformer size assumed ("14B")
}

// MemoryPart is one term of the training estimate.
type MemoryPart struct {
	Name string  `json:"name"`
	GiB  float64 `json:"gib"`
}

const (
	gib          = float64(1 << 30)
	teParams     = 5.7e9
	vaeGiB       = 0.5
	overheadGiB  = 1.5
	araGiB       = 0.3
	loraBytes    = 12.0
	emaBytes     = 4.0
	offloadExtra = 1.0
)

var qbits = regexp.MustCompile(`(?i)^(?:q|u)?int(\d)$`)

// bytesPerParam returns the storage of one weight for quantize/qtype.
func bytesPerParam(quantize bool, qtype string) (float64, bool) {
	if !quantize {
		return 2, false
	}
	q, _, ara := strings.Cut(qtype, "|")
	q = strings.ToLower(strings.TrimSpace(q))
	if m := qbits.FindStringSubmatch(q); m != nil {
		b, _ := strconv.Atoi(m[1])
		return float64(b) / 8, ara
	}
	return 1, ara // qfloat8, float8, qint8, int8, uint8, convrot8 and unknown 8-bit types
}

// EstimateMemory estimates the GPU memory process p needs (see
// MemoryEstimate for the model). ok is false when p is not a Wan process.
func EstimateMemory(p *Process) (MemoryEstimate, bool) {
	var e MemoryEstimate
	if p == nil || p.Model == nil {
		return e, false
	}
	m := p.Model
	w, ok := LookupWanArch(m.Arch)
	if !ok {
		return e, false
	}
	size, sure := sizeOf(w, m.NameOrPath)
	e.Size = size.label
	if !sure {
		e.Notes = append(e.Notes, fmt.Sprintf("model size not recognised from %q: assumed %s", m.NameOrPath, size.label))
	}
	quant := val(m.Quantize, false)
	qtype := m.QType
	if qtype == "" {
		qtype = "qfloat8"
	}
	bpp, ara := bytesPerParam(quant, qtype)
	lowVRAM := val(m.LowVRAM, false)
	expertGiB := size.params * bpp / gib
	if ara {
		expertGiB += araGiB
	}
	resident := w.Experts
	if lowVRAM {
		resident = 1
	}
	weights := expertGiB * float64(resident)
	if val(m.LayerOffloading, false) {
		pct := val(m.LayerOffloadingPercent, 1.0)
		weights = weights*(1-math.Min(math.Max(pct, 0), 1)) + offloadExtra
	}

	tr := p.Train
	if tr == nil {
		tr = &Train{}
	}
	caching := val(tr.CacheTextEmbeddings, false)
	for _, d := range p.Datasets {
		caching = caching || val(d.CacheTextEmbeddings, false)
	}
	teOff := val(tr.UnloadTextEncoder, false) || caching
	teBpp, _ := bytesPerParam(val(m.QuantizeTE, quant), orDefault(m.QTypeTE, "qfloat8"))
	te := 0.0
	if !teOff {
		te = teParams * teBpp / gib
	}

	rank := 4
	if p.Network != nil {
		rank = p.Network.Rank()
	}
	perBlock := float64((4+size.crossLinears)*rank*2*size.dim + 2*rank*(size.dim+size.ffn))
	loraParams := perBlock * float64(size.layers)
	experts := trainedExperts(w, m)
	bpl := loraBytes
	if useEMA(tr) {
		bpl += emaBytes
	}
	lora := loraParams * bpl * float64(experts) / gib

	batch := val(tr.BatchSize, 1)
	ckpt := val(tr.GradientCheckpoint, true)
	act := 0.0
	for _, d := range p.Datasets {
		frames := d.Frames()
		if val(d.AutoFrameCount, false) && frames < 81 {
			frames = 81
			e.Notes = appendOnce(e.Notes, "auto_frame_count: clips assumed up to 81 frames")
		}
		b := val(d.BatchSize, batch)
		for _, r := range d.ResolutionValues() {
			tokens := latentFrames(frames) * float64(r) * float64(r) / float64(w.BucketDiv*w.BucketDiv)
			a := activations(size, tokens, ckpt) * float64(b)
			act = math.Max(act, a)
		}
	}
	e.Parts = []MemoryPart{
		{"transformer", weights},
		{"text_encoder", te},
		{"vae", vaeGiB},
		{"lora_and_optimizer", lora},
		{"activations", act},
		{"overhead", overheadGiB},
	}
	if w.I2V {
		e.Parts = append(e.Parts, MemoryPart{"image_encoder", 1.2})
	}
	for _, pt := range e.Parts {
		e.TrainGiB += pt.GiB
	}

	teBF16 := teParams * 2 / gib
	if lowVRAM {
		e.LoadGiB = teBF16 + overheadGiB
	} else {
		quantPeak := 0.0
		if quant {
			quantPeak = size.params*2/gib + expertGiB*float64(w.Experts-1)
		}
		e.LoadGiB = math.Max(quantPeak, weights+teBF16) + overheadGiB
	}

	if s := p.Sample; s != nil && !val(tr.DisableSampling, false) {
		wd, ht, nf := s.Dims()
		tokens := latentFrames(nf) * float64(wd) * float64(ht) / float64(w.BucketDiv*w.BucketDiv)
		work := tokens * float64(2*size.ffn+8*size.dim) * 2 / gib
		dec := float64(wd) * float64(ht) * 384 * 8 / gib
		if lowVRAM {
			dec /= 4
		}
		e.SampleGiB = weights + te + vaeGiB + work + dec + overheadGiB
	}
	e.GiB = math.Max(e.TrainGiB, math.Max(e.LoadGiB, e.SampleGiB))
	return e, true
}

func activations(s transformerSize, tokens float64, ckpt bool) float64 {
	saved := tokens * float64(s.dim) * 2 * float64(s.layers)
	work := tokens * float64(2*s.ffn+8*s.dim) * 2
	if !ckpt {
		saved *= 12
	}
	return (saved + work) / gib
}

// latentFrames is Wan's VAE temporal compression: 1 + (T−1)//4.
func latentFrames(frames int) float64 {
	if frames < 1 {
		frames = 1
	}
	return float64(1 + (frames-1)/4)
}

func trainedExperts(w WanArch, m *Model) int {
	if w.Experts < 2 {
		return 1
	}
	n := 0
	for _, k := range []string{"train_high_noise", "train_low_noise"} {
		if v, ok := m.ModelKwargs[k].(bool); !ok || v {
			n++
		}
	}
	return max(n, 1)
}

func useEMA(t *Train) bool {
	ema, _ := t.Extra["ema_config"].(map[string]any)
	v, _ := ema["use_ema"].(bool)
	return v
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func appendOnce(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// Frames is the dataset's num_frames (default 1: images only).
func (d Dataset) Frames() int { return val(d.NumFrames, 1) }

// IsVideo reports whether ai-toolkit loads videos from the dataset
// (num_frames > 1 or auto_frame_count, toolkit/data_loader.py).
func (d Dataset) IsVideo() bool { return d.Frames() > 1 || val(d.AutoFrameCount, false) }

// ResolutionValues returns the dataset's resolutions (default [512]).
func (d Dataset) ResolutionValues() []int {
	if d.Resolution == nil || len(d.Resolution.Values) == 0 {
		return []int{512}
	}
	return d.Resolution.Values
}

// Dims returns the sample width, height and frames with ai-toolkit's
// defaults (512, 512, 1).
func (s *Sample) Dims() (w, h, frames int) {
	return val(s.Width, 512), val(s.Height, 512), val(s.NumFrames, 1)
}

// Rank is the LoRA rank ai-toolkit uses: rank, else linear, else 4.
func (n *Network) Rank() int {
	if r, ok := n.Extra["rank"].(int); ok {
		return r
	}
	return val(n.Linear, 4)
}
