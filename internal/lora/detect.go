package lora

import (
	"fmt"
	"sort"
	"strings"
)

// Base model ids scopectl uses everywhere (library, Scope pipelines, CivitAI mapping).
const (
	BaseT2V14B   = "wan2.1-t2v-14b"
	BaseT2V1_3B  = "wan2.1-t2v-1.3b"
	BaseI2V14B   = "wan2.1-i2v-14b"
	BaseUnknown  = "unknown"
	textDim      = 4096
	imageDim     = 1280
	freqDim      = 256
	headOutWan21 = 64 // out_dim 16 × patch 1×2×2
)

// Arch holds the transformer dimensions of one Wan2.1 model.
type Arch struct {
	Base   string
	Dim    int64
	FFNDim int64
	Layers int
	I2V    bool
}

// Arches are the Wan2.1 transformers LoRAs are trained for (Wan2.1 config files).
var Arches = []Arch{
	{BaseT2V14B, 5120, 13824, 40, false},
	{BaseI2V14B, 5120, 13824, 40, true},
	{BaseT2V1_3B, 1536, 8960, 30, false},
}

// ArchOf returns the dimensions of a base id.
func ArchOf(base string) (Arch, bool) {
	for _, a := range Arches {
		if a.Base == base {
			return a, true
		}
	}
	return Arch{}, false
}

// expectedIO is the (in, out) features of a module's Linear in a model of the given dims.
func expectedIO(module string, a Arch) (in, out int64, ok bool) {
	switch sub := blockSub(module); sub {
	case "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
		"cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
		"cross_attn.k_img", "cross_attn.v_img":
		return a.Dim, a.Dim, true
	case "ffn.0":
		return a.Dim, a.FFNDim, true
	case "ffn.2":
		return a.FFNDim, a.Dim, true
	case "text_embedding.0":
		return textDim, a.Dim, true
	case "text_embedding.2", "time_embedding.2":
		return a.Dim, a.Dim, true
	case "time_embedding.0":
		return freqDim, a.Dim, true
	case "time_projection.1":
		return a.Dim, a.Dim * 6, true
	case "head.head":
		return a.Dim, headOutWan21, true
	case "img_emb.proj.1":
		return imageDim, imageDim, true
	case "img_emb.proj.3":
		return imageDim, a.Dim, true
	}
	return 0, 0, false
}

// detectBase decides the base model from the shapes and block indices of the pairs.
// It returns the base id and a human reason; unknown comes with the reason why.
func detectBase(p *Parsed) (base, reason string) {
	mods := p.PairModules()
	if len(mods) == 0 {
		return BaseUnknown, "no lora_A/lora_B pairs"
	}
	maxBlock := -1
	i2v := false
	for _, m := range mods {
		if b := blockIndex(m.Name); b > maxBlock {
			maxBlock = b
		}
		if t := Target(m.Name); t == "cross_attn_img" || t == "image_embedding" {
			i2v = true
		}
		if m.Name == "patch_embedding" && m.In == 36*1*2*2 {
			i2v = true
		}
	}
	var fits []Arch
	var firstMismatch string
	shapesFit := false
	for _, a := range Arches {
		bad := ""
		for _, m := range mods {
			in, out, ok := expectedIO(m.Name, a)
			if ok && (in != m.In || out != m.Out) {
				bad = fmt.Sprintf("%s is %d→%d, %s has %d→%d", m.Name, m.In, m.Out, a.Base, in, out)
				break
			}
		}
		if bad == "" && maxBlock >= a.Layers {
			bad = fmt.Sprintf("block %d exists, %s has %d blocks", maxBlock, a.Base, a.Layers)
			if !shapesFit { // the closest model explains best why none fits
				shapesFit, firstMismatch = true, bad
			}
		}
		if bad == "" && i2v && !a.I2V {
			bad = "image cross-attention modules target an I2V model"
		}
		if bad == "" {
			fits = append(fits, a)
		} else if firstMismatch == "" {
			firstMismatch = bad
		}
	}
	switch {
	case len(fits) == 0:
		dims := observedDims(mods)
		hint := ""
		if dims == "3072" {
			hint = " (dim 3072 is Wan2.2 TI2V-5B, not supported by Scope's Wan2.1 pipelines)"
		}
		return BaseUnknown, fmt.Sprintf("shapes fit no Wan2.1 model: hidden dim %s%s; e.g. %s", dims, hint, firstMismatch)
	case len(fits) == 1:
		a := fits[0]
		return a.Base, fmt.Sprintf("hidden dim %d, ffn dim %d, blocks 0–%d of %d", a.Dim, a.FFNDim, maxBlock, a.Layers)
	}
	// T2V-14B and I2V-14B share every shape except image cross-attention.
	a := fits[0]
	return a.Base, fmt.Sprintf("hidden dim %d, blocks 0–%d of %d; no image cross-attention targeted, so it also fits %s", a.Dim, maxBlock, a.Layers, fits[1].Base)
}

func observedDims(mods []*Module) string {
	seen := map[int64]bool{}
	for _, m := range mods {
		switch blockSub(m.Name) {
		case "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o":
			seen[m.Out] = true
		}
	}
	if len(seen) == 0 {
		for _, m := range mods {
			seen[m.Out] = true
		}
	}
	var ds []string
	for d := range seen {
		ds = append(ds, fmt.Sprint(d))
	}
	sort.Strings(ds)
	return strings.Join(ds, ",")
}

// foreignModel recognises what a non-Wan safetensors file is from its key names.
// It returns kind ("lora" or "checkpoint") and a model description, or "" when it
// cannot tell.
func foreignModel(names []string) (kind, model string) {
	has := func(pfx ...string) bool {
		for _, n := range names {
			for _, p := range pfx {
				if strings.HasPrefix(n, p) || strings.Contains(n, "."+p) {
					return true
				}
			}
		}
		return false
	}
	loraish := false
	for _, n := range names {
		if strings.Contains(n, "lora_") || strings.HasSuffix(n, ".alpha") || strings.Contains(n, ".lora.") {
			loraish = true
			break
		}
	}
	switch {
	case has("lora_te2_", "lora_unet_input_blocks", "lora_unet_output_blocks") && loraish:
		return "lora", "Stable Diffusion XL"
	case has("lora_unet_down_blocks", "lora_unet_up_blocks", "lora_unet_mid_block", "lora_te_", "unet.down_blocks") && loraish:
		return "lora", "Stable Diffusion 1.x/2.x"
	case has("lora_unet_double_blocks", "lora_unet_single_blocks", "transformer.single_transformer_blocks", "single_transformer_blocks") && loraish:
		return "lora", "FLUX"
	case has("transformer.transformer_blocks", "transformer_blocks.") && loraish:
		return "lora", "another diffusion transformer (transformer_blocks.*: FLUX, HunyuanVideo, LTX-Video, CogVideoX…)"
	case loraish:
		return "lora", "unrecognised model"
	case has("model.diffusion_model.input_blocks", "conditioner.embedders"):
		return "checkpoint", "Stable Diffusion full checkpoint"
	case has("blocks.0.self_attn.q.weight", "model.diffusion_model.blocks.0.self_attn.q.weight"):
		return "checkpoint", "Wan2.1 full transformer checkpoint"
	case has("double_blocks.", "single_blocks."):
		return "checkpoint", "FLUX full checkpoint"
	}
	return "", ""
}
