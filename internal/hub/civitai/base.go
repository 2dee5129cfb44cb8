package civitai

import (
	"strings"

	"github.com/daydreamlive/scopectl/internal/lora"
)

// CivitAI baseModel strings for the Wan 2.1 transformers scopectl installs LoRAs for,
// as CivitAI writes them.
const (
	CivitaiWanT2V1_3B   = "Wan Video 1.3B t2v"
	CivitaiWanT2V14B    = "Wan Video 14B t2v"
	CivitaiWanI2V14B480 = "Wan Video 14B i2v 480p"
	CivitaiWanI2V14B720 = "Wan Video 14B i2v 720p"
)

// CivitaiBases returns the CivitAI baseModel strings that map to one of our base ids.
// For the 14B image-to-video model that is both the 480p and the 720p label.
func CivitaiBases(base string) []string {
	switch base {
	case lora.BaseT2V1_3B:
		return []string{CivitaiWanT2V1_3B}
	case lora.BaseT2V14B:
		return []string{CivitaiWanT2V14B}
	case lora.BaseI2V14B:
		return []string{CivitaiWanI2V14B480, CivitaiWanI2V14B720}
	}
	return nil
}

// normBase lower-cases a baseModel string and collapses runs of spaces, '_' and '-'.
func normBase(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.NewReplacer("_", " ", "\t", " ").Replace(s)
	return strings.Join(strings.Fields(s), " ")
}

// MapBaseModel maps CivitAI's baseModel label to our base id (lora.BaseT2V14B,
// lora.BaseT2V1_3B, lora.BaseI2V14B) or lora.BaseUnknown. Wan 2.2 and other video
// families are unknown to scopectl; BaseNote says why.
func MapBaseModel(civitaiBase string) string {
	switch normBase(civitaiBase) {
	case "wan video 1.3b t2v", "wan video 2.1 1.3b t2v", "wan video t2v 1.3b":
		return lora.BaseT2V1_3B
	case "wan video 14b t2v", "wan video 2.1 14b t2v", "wan video t2v 14b":
		return lora.BaseT2V14B
	case "wan video 14b i2v 480p", "wan video 14b i2v 720p", "wan video 2.1 14b i2v 480p",
		"wan video 2.1 14b i2v 720p", "wan video i2v 14b":
		return lora.BaseI2V14B
	}
	return lora.BaseUnknown
}

// BaseNote explains, in one line, what a CivitAI baseModel label means for scopectl:
// "" for the labels MapBaseModel maps, a reason otherwise.
func BaseNote(civitaiBase string) string {
	if MapBaseModel(civitaiBase) != lora.BaseUnknown {
		return ""
	}
	n := normBase(civitaiBase)
	switch {
	case n == "":
		return "CivitAI gives no base model; scopectl will detect it from the file's tensor shapes"
	case strings.HasPrefix(n, "wan video 2.2"), strings.HasPrefix(n, "wan video 2.5"), strings.HasPrefix(n, "wan video 2."):
		return "CivitAI labels it " + clip(civitaiBase) + ": Wan 2.2+ LoRAs are for other transformers than the Wan 2.1 models Scope runs, so scopectl treats the base as unknown"
	case n == "wan video" || strings.HasPrefix(n, "wan video"):
		return "CivitAI labels it " + clip(civitaiBase) + ", which does not say which Wan 2.1 model; scopectl will detect it from the file's tensor shapes"
	}
	return "CivitAI labels it " + clip(civitaiBase) + ", not a Wan 2.1 video model; Scope's Wan pipelines cannot use it"
}
