package train

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/daydreamlive/scopectl/internal/aitk"
)

// Comparison puts a job's checkpoints' samples side by side: one row per sample
// prompt, one column per step. Field names are part of --json.
type Comparison struct {
	JobID   string         `json:"job_id"`
	Name    string         `json:"name"`
	Steps   []ComparedStep `json:"steps"`
	Prompts []ComparedRow  `json:"prompts"`
	Missing []string       `json:"missing,omitempty"` // asked-for steps with no collected checkpoint
}

// ComparedStep is one column: a collected checkpoint.
type ComparedStep struct {
	Step  int      `json:"step"`
	LoRA  string   `json:"lora"` // library name
	Final bool     `json:"final,omitempty"`
	Loss  *float64 `json:"loss,omitempty"`
}

// ComparedRow is one sample prompt: its sample per step ("" where that step has none),
// Samples[i] belonging to Steps[i].
type ComparedRow struct {
	Index   int      `json:"index"`
	Prompt  string   `json:"prompt,omitempty"` // from the job's config, when it is still there
	Samples []string `json:"samples"`          // paths in the library
}

// ParseSteps reads "400,800" (empty: every step).
func ParseSteps(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("step %q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// Compare gathers the samples of the job's collected checkpoints at steps (nil:
// all), ordered by step. A step asked for and not collected is listed in Missing;
// none found at all is an error.
func (t *Trainer) Compare(ctx context.Context, jobID string, steps []int) (*Comparison, error) {
	job, err := t.Job(ctx, jobID)
	if err != nil {
		return nil, err
	}
	cps, err := t.Jobs.ListTrainCheckpoints(ctx, job.ID)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(cps, func(i, j int) bool { return cps[i].Step < cps[j].Step })
	want := map[int]bool{}
	for _, s := range steps {
		want[s] = true
	}
	c := &Comparison{JobID: job.ID, Name: job.Name}
	seen := map[int]bool{}
	samples := map[int]map[int]string{} // index -> column -> path
	for _, cp := range cps {
		if len(want) > 0 && !want[cp.Step] || seen[cp.Step] {
			continue
		}
		seen[cp.Step] = true
		col := ComparedStep{Step: cp.Step, Loss: cp.Loss, Final: !isStepName(cp.File)}
		if e, err := t.Lib.Store.GetBySHA(ctx, cp.SHA256); err == nil {
			col.LoRA = e.Name
		}
		sms, err := t.Lib.Store.ListSamples(ctx, cp.SHA256)
		if err != nil {
			return nil, err
		}
		for _, sm := range sms {
			n, ok := aitk.ParseSampleName(sm.Name)
			if !ok {
				continue
			}
			if samples[n.Index] == nil {
				samples[n.Index] = map[int]string{}
			}
			samples[n.Index][len(c.Steps)] = sm.Path
		}
		c.Steps = append(c.Steps, col)
	}
	for _, s := range steps {
		if !seen[s] {
			c.Missing = append(c.Missing, strconv.Itoa(s))
		}
	}
	if len(c.Steps) == 0 {
		var have []string
		for _, cp := range cps {
			have = append(have, strconv.Itoa(cp.Step))
		}
		if len(have) == 0 {
			return nil, fmt.Errorf("job %s has no collected checkpoints (scopectl train collect %s)", job.ID, job.ID)
		}
		return nil, fmt.Errorf("job %s has no checkpoint at step %s; collected: %s", job.ID, strings.Join(c.Missing, ","), strings.Join(have, ","))
	}
	prompts := t.samplePrompts(job.ConfigPath)
	var idx []int
	for i := range samples {
		idx = append(idx, i)
	}
	for i := range prompts {
		if samples[i] == nil {
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	for _, i := range idx {
		r := ComparedRow{Index: i, Samples: make([]string, len(c.Steps))}
		if i < len(prompts) {
			r.Prompt = prompts[i]
		}
		for col, p := range samples[i] {
			r.Samples[col] = p
		}
		c.Prompts = append(c.Prompts, r)
	}
	return c, nil
}

// isStepName: NAME_000000400.safetensors, not the final NAME.safetensors.
func isStepName(file string) bool {
	_, ok := aitk.ParseCheckpointName(file)
	return ok
}

// samplePrompts reads the sample prompts of the job's local config (best effort).
func (t *Trainer) samplePrompts(path string) []string {
	if path == "" {
		return nil
	}
	cfg, err := aitk.ReadFile(path, aitk.ParseOptions{})
	if err != nil || len(cfg.Config.Process) == 0 || cfg.Config.Process[0].Sample == nil {
		return nil
	}
	s := cfg.Config.Process[0].Sample
	if len(s.Samples) > 0 {
		out := make([]string, len(s.Samples))
		for i, it := range s.Samples {
			out[i] = it.Prompt
		}
		return out
	}
	return s.Prompts
}
