// Package lora knows the Wan2.1 LoRA key families (diffusers/PEFT, ComfyUI/ai-toolkit
// "diffusion_model.", kohya/musubi "lora_unet_"), detects the base model from tensor
// shapes, and converts between families without touching tensor bytes.
//
// Every key is parsed into a canonical Module (original Wan naming, as the Wan model's
// own state dict spells it: "blocks.3.self_attn.q") and a Part (A, B, alpha, …). The
// family is only a spelling of that pair, which is what makes conversion lossless.
package lora

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Family is one spelling of Wan LoRA keys.
type Family string

const (
	Diffusers Family = "diffusers" // transformer.blocks.N.attn1.to_q.lora_A.weight
	Comfy     Family = "comfy"     // diffusion_model.blocks.N.self_attn.q.lora_A.weight (ai-toolkit, ComfyUI)
	Kohya     Family = "kohya"     // lora_unet_blocks_N_self_attn_q.lora_down.weight + .alpha
	Unknown   Family = "unknown"
)

// ParseFamily accepts the names users type.
func ParseFamily(s string) (Family, bool) {
	switch strings.ToLower(s) {
	case "diffusers", "peft":
		return Diffusers, true
	case "comfy", "comfyui", "ai-toolkit", "aitoolkit", "diffusion_model", "original":
		return Comfy, true
	case "kohya", "musubi", "lora_unet":
		return Kohya, true
	}
	return "", false
}

// Part is what one tensor of a LoRA module holds.
type Part int

const (
	PartA     Part = iota // down / lora_A: [rank, in]
	PartB                 // up / lora_B: [out, rank]
	PartAlpha             // scalar alpha
	PartDiff              // full weight delta
	PartDiffB             // full bias delta
	PartDoRA              // DoRA magnitude vector
)

func (p Part) String() string {
	return [...]string{"lora_A", "lora_B", "alpha", "diff", "diff_b", "dora_magnitude"}[p]
}

// wanToDiffusers maps the per-block module names of the original Wan code to diffusers'
// WanTransformer3DModel names (diffusers scripts/convert_wan_to_diffusers.py).
var wanBlockToDiffusers = map[string]string{
	"self_attn.q":           "attn1.to_q",
	"self_attn.k":           "attn1.to_k",
	"self_attn.v":           "attn1.to_v",
	"self_attn.o":           "attn1.to_out.0",
	"self_attn.norm_q":      "attn1.norm_q",
	"self_attn.norm_k":      "attn1.norm_k",
	"cross_attn.q":          "attn2.to_q",
	"cross_attn.k":          "attn2.to_k",
	"cross_attn.v":          "attn2.to_v",
	"cross_attn.o":          "attn2.to_out.0",
	"cross_attn.k_img":      "attn2.add_k_proj",
	"cross_attn.v_img":      "attn2.add_v_proj",
	"cross_attn.norm_q":     "attn2.norm_q",
	"cross_attn.norm_k":     "attn2.norm_k",
	"cross_attn.norm_k_img": "attn2.norm_added_k",
	"ffn.0":                 "ffn.net.0.proj",
	"ffn.2":                 "ffn.net.2",
	"norm3":                 "norm2",
}

var wanTopToDiffusers = map[string]string{
	"patch_embedding":   "patch_embedding",
	"text_embedding.0":  "condition_embedder.text_embedder.linear_1",
	"text_embedding.2":  "condition_embedder.text_embedder.linear_2",
	"time_embedding.0":  "condition_embedder.time_embedder.linear_1",
	"time_embedding.2":  "condition_embedder.time_embedder.linear_2",
	"time_projection.1": "condition_embedder.time_proj",
	"head.head":         "proj_out",
	"img_emb.proj.0":    "condition_embedder.image_embedder.norm1",
	"img_emb.proj.1":    "condition_embedder.image_embedder.ff.net.0.proj",
	"img_emb.proj.3":    "condition_embedder.image_embedder.ff.net.2",
	"img_emb.proj.4":    "condition_embedder.image_embedder.norm2",
}

var (
	diffusersBlockToWan = invert(wanBlockToDiffusers)
	diffusersTopToWan   = invert(wanTopToDiffusers)
	kohyaBlockToWan     = underscored(wanBlockToDiffusers)
	kohyaTopToWan       = underscored(wanTopToDiffusers)
	blockRe             = regexp.MustCompile(`^blocks\.(\d+)\.(.+)$`)
	kohyaBlockRe        = regexp.MustCompile(`^blocks_(\d+)_(.+)$`)
)

func invert(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

func underscored(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k := range m {
		out[strings.ReplaceAll(k, ".", "_")] = k
	}
	return out
}

// Key is one parsed tensor name.
type Key struct {
	Module string // canonical Wan module name, e.g. "blocks.3.self_attn.q"
	Part   Part
	Family Family
	Prefix string // "diffusion_model.", "transformer.", "base_model.model.", "lora_unet_" or ""
	UpDown bool   // spelled lora_down/lora_up rather than lora_A/lora_B
}

// Block returns the block index of the module, or -1 for top-level modules.
func (k Key) Block() int { return blockIndex(k.Module) }

func blockIndex(module string) int {
	m := blockRe.FindStringSubmatch(module)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return n
}

// blockSub returns the module name inside its block ("self_attn.q"), or the whole name.
func blockSub(module string) string {
	if m := blockRe.FindStringSubmatch(module); m != nil {
		return m[2]
	}
	return module
}

var partSuffixes = []struct {
	suffix string
	part   Part
	upDown bool
}{
	{".lora_A.weight", PartA, false},
	{".lora_B.weight", PartB, false},
	{".lora_A.default.weight", PartA, false},
	{".lora_B.default.weight", PartB, false},
	{".lora_down.weight", PartA, true},
	{".lora_up.weight", PartB, true},
	{".alpha", PartAlpha, false},
	{".diff_b", PartDiffB, false},
	{".diff", PartDiff, false},
	{".dora_scale", PartDoRA, false},
	{".lora_magnitude_vector.weight", PartDoRA, false},
	{".lora_magnitude_vector", PartDoRA, false},
}

// ParseKey parses a tensor name of any of the three families. ok is false for names that are
// not a Wan LoRA key (another model's LoRA, a full checkpoint weight, junk).
func ParseKey(name string) (k Key, ok bool) {
	rest := ""
	for _, s := range partSuffixes {
		if strings.HasSuffix(name, s.suffix) {
			rest, k.Part, k.UpDown = strings.TrimSuffix(name, s.suffix), s.part, s.upDown
			ok = true
			break
		}
	}
	if !ok || rest == "" {
		return Key{}, false
	}
	if strings.HasPrefix(rest, "lora_unet_") {
		k.Prefix, k.Family = "lora_unet_", Kohya
		mod, ok := kohyaModule(strings.TrimPrefix(rest, "lora_unet_"))
		k.Module = mod
		return k, ok
	}
	for _, p := range []string{"diffusion_model.", "transformer.", "base_model.model.", "model.diffusion_model."} {
		if strings.HasPrefix(rest, p) {
			k.Prefix, rest = p, strings.TrimPrefix(rest, p)
			break
		}
	}
	// Wan naming first (it is the canonical one), then diffusers naming. A bare
	// "blocks.N.norm2" is ambiguous between the two; the prefix decides, Wan otherwise.
	wan, wanOK := wanModule(rest)
	dif, difOK := diffusersModule(rest)
	switch {
	case k.Prefix == "transformer." || k.Prefix == "base_model.model.":
		if difOK {
			k.Module, k.Family = dif, Diffusers
			return k, true
		}
		if wanOK { // Wan names under a PEFT prefix: still the original spelling.
			k.Module, k.Family = wan, Comfy
			return k, true
		}
	case wanOK:
		k.Module, k.Family = wan, Comfy
		return k, true
	case difOK:
		k.Module, k.Family = dif, Diffusers
		return k, true
	}
	return Key{}, false
}

func wanModule(s string) (string, bool) {
	if m := blockRe.FindStringSubmatch(s); m != nil {
		if _, ok := wanBlockToDiffusers[m[2]]; ok {
			return s, true
		}
		return "", false
	}
	_, ok := wanTopToDiffusers[s]
	return s, ok
}

func diffusersModule(s string) (string, bool) {
	if m := blockRe.FindStringSubmatch(s); m != nil {
		if w, ok := diffusersBlockToWan[m[2]]; ok {
			return "blocks." + m[1] + "." + w, true
		}
		return "", false
	}
	w, ok := diffusersTopToWan[s]
	return w, ok
}

func kohyaModule(s string) (string, bool) {
	if m := kohyaBlockRe.FindStringSubmatch(s); m != nil {
		if w, ok := kohyaBlockToWan[m[2]]; ok {
			return "blocks." + m[1] + "." + w, true
		}
		return "", false
	}
	w, ok := kohyaTopToWan[s]
	return w, ok
}

// Style chooses how a family spells a key on output.
type Style struct {
	Family Family
	// Bare drops the "diffusion_model." prefix of the Comfy family. Scope rewrites bare
	// blocks.… keys itself and then honours their alpha keys (reference/scope.md).
	Bare bool
}

// FormatKey spells module+part in the given style.
func FormatKey(st Style, module string, p Part) string {
	switch st.Family {
	case Kohya:
		base := "lora_unet_" + strings.ReplaceAll(module, ".", "_")
		switch p {
		case PartA:
			return base + ".lora_down.weight"
		case PartB:
			return base + ".lora_up.weight"
		}
		return base + "." + kohyaSuffix(p)
	case Diffusers:
		base := "transformer." + diffusersName(module)
		switch p {
		case PartA:
			return base + ".lora_A.weight"
		case PartB:
			return base + ".lora_B.weight"
		case PartDoRA:
			return base + ".lora_magnitude_vector"
		}
		return base + "." + kohyaSuffix(p)
	default:
		base := "diffusion_model." + module
		if st.Bare {
			base = module
		}
		switch p {
		case PartA:
			return base + ".lora_A.weight"
		case PartB:
			return base + ".lora_B.weight"
		}
		return base + "." + kohyaSuffix(p)
	}
}

func kohyaSuffix(p Part) string {
	switch p {
	case PartAlpha:
		return "alpha"
	case PartDiff:
		return "diff"
	case PartDiffB:
		return "diff_b"
	case PartDoRA:
		return "dora_scale"
	}
	return p.String()
}

// diffusersName is the diffusers spelling of a canonical module (without "transformer.").
func diffusersName(module string) string {
	if m := blockRe.FindStringSubmatch(module); m != nil {
		return "blocks." + m[1] + "." + wanBlockToDiffusers[m[2]]
	}
	return wanTopToDiffusers[module]
}

// Target names the role of a module for reports.
func Target(module string) string {
	sub := blockSub(module)
	switch {
	case strings.HasPrefix(sub, "self_attn."):
		return "self_attn"
	case sub == "cross_attn.k_img" || sub == "cross_attn.v_img" || sub == "cross_attn.norm_k_img":
		return "cross_attn_img"
	case strings.HasPrefix(sub, "cross_attn."):
		return "cross_attn"
	case strings.HasPrefix(sub, "ffn."):
		return "ffn"
	case strings.HasPrefix(sub, "norm"):
		return "norm"
	case strings.HasPrefix(sub, "img_emb."):
		return "image_embedding"
	case strings.HasSuffix(sub, "_embedding") || strings.Contains(sub, "_embedding.") || strings.HasPrefix(sub, "time_projection"):
		return "embedding"
	case strings.HasPrefix(sub, "head."):
		return "head"
	}
	return "other"
}

// moduleLess orders modules by block number, then name, so that files read naturally.
func moduleLess(a, b string) bool {
	ba, bb := blockIndex(a), blockIndex(b)
	if ba != bb {
		return ba < bb
	}
	return a < b
}

func sortModules(mods []string) {
	sort.Slice(mods, func(i, j int) bool { return moduleLess(mods[i], mods[j]) })
}
