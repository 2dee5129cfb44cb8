package aitk

import (
	"slices"
	"strings"
)

// WanArch describes one Wan model family ai-toolkit trains (the arch names
// are the `arch = "…"` of toolkit/models/wan21 and
// extensions_built_in/diffusion_models/wan22). The sizes feed
// EstimateMemory; they are the published model dimensions.
type WanArch struct {
	Arch       string   `json:"arch"`        // as ModelConfig reads it (no ":tag")
	Models     []string `json:"models"`      // name_or_path values ai-toolkit's presets and examples use
	I2V        bool     `json:"i2v"`         // needs a start image (ctrl_img) to sample
	Experts    int      `json:"experts"`     // transformers: 2 for the Wan 2.2 A14B high/low-noise pair
	BucketDiv  int      `json:"bucket_div"`  // get_bucket_divisibility(): bucket sides are multiples of this
	DatasetFPS int      `json:"dataset_fps"` // frame rate the model was trained at (UI preset dataset fps)
}

// wanArches are the Wan arches of ai-toolkit 0.12.26.
var wanArches = []WanArch{
	{Arch: "wan21", Models: []string{"Wan-AI/Wan2.1-T2V-14B-Diffusers", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}, Experts: 1, BucketDiv: 16, DatasetFPS: 16},
	{Arch: "wan21_i2v", Models: []string{"Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"}, I2V: true, Experts: 1, BucketDiv: 16, DatasetFPS: 16},
	{Arch: "wan22_14b", Models: []string{"ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16"}, Experts: 2, BucketDiv: 16, DatasetFPS: 16},
	{Arch: "wan22_14b_i2v", Models: []string{"ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16"}, I2V: true, Experts: 2, BucketDiv: 16, DatasetFPS: 16},
	{Arch: "wan22_5b", Models: []string{"Wan-AI/Wan2.2-TI2V-5B-Diffusers"}, Experts: 1, BucketDiv: 32, DatasetFPS: 24},
}

// otherArches are ai-toolkit's non-Wan arches (ModelArch plus every
// registered model class): valid for ai-toolkit, useless to Scope.
var otherArches = []string{
	"sd1", "sd2", "sd3", "sdxl", "pixart", "pixart_sigma", "auraflow", "flux", "flex1", "flex2",
	"lumina2", "vega", "ssd", "anima", "sd", "cogview4", "ace_step_15", "ace_step_15_xl",
	"boogu_image", "boogu_image_edit", "chroma", "chroma_radiance", "ernie_image", "f-lite",
	"flux2", "flux2_klein_4b", "flux2_klein_9b", "flux_kontext", "hidream", "hidream_e1",
	"hidream_o1", "ideogram4", "krea2", "ltx2", "ltx2.3", "ltx2.5", "mageflow", "mageflow_edit",
	"minimax_h3", "minimax_h3_ref2va", "nucleus_image", "omnigen2", "prx_pixel", "qwen_image",
	"qwen_image_edit", "qwen_image_edit_plus", "zeta_chroma", "zimage", "zimage_l2p",
}

// WanArches returns the Wan arches ai-toolkit knows.
func WanArches() []WanArch { return slices.Clone(wanArches) }

// LookupWanArch returns the Wan arch for an arch value as written in a
// config ("wan21:14b" finds wan21).
func LookupWanArch(arch string) (WanArch, bool) {
	a := ArchBase(arch)
	for _, w := range wanArches {
		if w.Arch == a {
			return w, true
		}
	}
	return WanArch{}, false
}

// KnownArch reports whether ai-toolkit has a model class for arch. An
// unknown arch is not an error there: get_model_class silently falls back to
// the legacy Stable Diffusion loader, which then fails on a Wan checkpoint.
func KnownArch(arch string) bool {
	if _, ok := LookupWanArch(arch); ok {
		return true
	}
	return slices.Contains(otherArches, ArchBase(arch))
}

// modelArch returns the Wan arch whose preset uses name_or_path, if any.
func modelArch(nameOrPath string) (WanArch, bool) {
	for _, w := range wanArches {
		for _, m := range w.Models {
			if strings.EqualFold(m, nameOrPath) {
				return w, true
			}
		}
	}
	return WanArch{}, false
}

// isHubID reports whether p looks like a Hugging Face repo id ("org/name")
// rather than a local path.
func isHubID(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasPrefix(p, ".") || strings.HasPrefix(p, "~") ||
		strings.Contains(p, "\\") || strings.Contains(p, ":") {
		return false
	}
	return strings.Count(p, "/") == 1
}

// transformerSize is the shape of one Wan transformer, from the model cards.
type transformerSize struct {
	label        string
	params       float64 // transformer parameters
	dim, ffn     int
	layers       int
	crossLinears int // cross-attention linears LoRA targets (I2V adds k_img, v_img)
}

var (
	size1_3B = transformerSize{label: "1.3B", params: 1.42e9, dim: 1536, ffn: 8960, layers: 30, crossLinears: 4}
	size14B  = transformerSize{label: "14B", params: 14.3e9, dim: 5120, ffn: 13824, layers: 40, crossLinears: 4}
	size5B   = transformerSize{label: "5B", params: 5.0e9, dim: 3072, ffn: 14336, layers: 30, crossLinears: 4}
)

// sizeOf picks the transformer size for a model; unknown Wan 2.1 paths are
// taken as 14B (the larger, so the memory check errs high) unless the path
// says 1.3B.
func sizeOf(w WanArch, nameOrPath string) (transformerSize, bool) {
	switch w.Arch {
	case "wan22_5b":
		return size5B, true
	case "wan21":
		l := strings.ToLower(nameOrPath)
		if strings.Contains(l, "1.3b") || strings.Contains(l, "1_3b") || strings.Contains(l, "1-3b") {
			return size1_3B, true
		}
		return size14B, strings.Contains(l, "14b")
	}
	s := size14B
	if w.Arch == "wan21_i2v" {
		s.crossLinears = 6
	}
	return s, true
}
