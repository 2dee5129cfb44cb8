package scope

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// PipelineBase maps each Scope pipeline to the base model its LoRAs must be
// trained on (Scope docs/lora.md).
var PipelineBase = map[string]string{
	"longlive":            "wan2.1-t2v-1.3b",
	"streamdiffusionv2":   "wan2.1-t2v-1.3b",
	"reward-forcing":      "wan2.1-t2v-1.3b",
	"memflow":             "wan2.1-t2v-1.3b",
	"krea-realtime-video": "wan2.1-t2v-14b",
}

var (
	// ErrUnknownPipeline is wrapped by CheckPipeline for a pipeline not in PipelineBase.
	ErrUnknownPipeline = errors.New("unknown pipeline")
	// ErrBaseMismatch is wrapped by CheckPipeline when a LoRA's base does not fit.
	ErrBaseMismatch = errors.New("LoRA base does not fit pipeline")
)

// Pipelines returns the known pipeline names, sorted.
func Pipelines() []string {
	out := make([]string, 0, len(PipelineBase))
	for p := range PipelineBase {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

type checkError struct {
	msg  string
	kind error
}

func (e *checkError) Error() string { return e.msg }
func (e *checkError) Unwrap() error { return e.kind }

// CheckPipeline reports whether a LoRA with the given base fits pipeline.
// Errors wrap ErrUnknownPipeline or ErrBaseMismatch; their text is meant for
// the user as is.
func CheckPipeline(pipeline, base string) error {
	want, ok := PipelineBase[pipeline]
	if !ok {
		return &checkError{
			msg:  fmt.Sprintf("unknown pipeline %q (known: %s)", pipeline, strings.Join(Pipelines(), ", ")),
			kind: ErrUnknownPipeline,
		}
	}
	if base == want {
		return nil
	}
	if base == "" || base == "unknown" {
		return &checkError{
			msg:  fmt.Sprintf("LoRA base model is unknown, cannot confirm it fits pipeline %s (takes %s LoRAs); use --force to install anyway", pipeline, want),
			kind: ErrBaseMismatch,
		}
	}
	return &checkError{
		msg:  fmt.Sprintf("LoRA base %s does not fit pipeline %s (takes %s LoRAs); use --force to install anyway", base, pipeline, want),
		kind: ErrBaseMismatch,
	}
}
