package lora

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/safetensors"
)

// ConvertFile converts in to out atomically: the output appears complete or not at all.
func ConvertFile(in, out string, opt ConvertOptions) (*ConvertResult, error) {
	f, err := safetensors.Open(in)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := Analyze(f)
	if err != nil {
		return nil, err
	}
	return WriteConverted(f, p, Describe(p, in).Family, opt, out)
}

// WriteConverted writes the conversion of an analyzed file to path atomically.
func WriteConverted(f *safetensors.File, p *Parsed, from Family, opt ConvertOptions, path string) (*ConvertResult, error) {
	pl, err := NewPlan(p, from, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	src, err := os.Open(f.Path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	af, err := atomicfile.Create(filepath.Dir(path), filepath.Base(path), 0o644)
	if err != nil {
		return nil, err
	}
	defer af.Abort()
	res, err := pl.Write(src, f.Header.DataStart(), af)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := af.Commit(); err != nil {
		return nil, err
	}
	return res, nil
}

// ScopeOptions returns the conversion whose effect in Daydream Scope equals
// B @ A × alpha/rank of the source, with tensors copied bit for bit:
//   - every scale is 1: diffusion_model. lora_A/lora_B keys and no alpha — the form
//     ai-toolkit writes and Scope loads untouched;
//   - otherwise: bare blocks.… lora_A/lora_B keys with their alpha keys. Scope rewrites
//     such files itself and multiplies B by alpha/rank (it ignores alpha only on files
//     already in diffusion_model. form).
func ScopeOptions(p *Parsed) ConvertOptions {
	for _, m := range p.PairModules() {
		if m.Scale() != 1 {
			return ConvertOptions{To: Comfy, Bare: true, DropUnitAlpha: true, DropForeign: true}
		}
	}
	return ConvertOptions{To: Comfy, DropUnitAlpha: true, DropForeign: true}
}
