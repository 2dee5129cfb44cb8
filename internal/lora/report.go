package lora

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/daydreamlive/scopectl/internal/safetensors"
)

// Report is what `lora inspect` says about a file. Field names are part of the --json
// contract: add fields, never rename them.
type Report struct {
	Path       string             `json:"path"`
	Kind       string             `json:"kind"` // "wan-lora", "lora" (another model's), "checkpoint", "unknown"
	Model      string             `json:"model,omitempty"`
	Family     Family             `json:"family"`
	Base       string             `json:"base"`
	BaseReason string             `json:"base_reason"`
	Rank       int                `json:"rank"`
	Ranks      map[string]int     `json:"ranks,omitempty"` // per module, only when ranks differ
	Alpha      *float64           `json:"alpha"`           // nil when alphas differ (see Alphas)
	Alphas     map[string]float64 `json:"alphas,omitempty"`
	AlphaFrom  string             `json:"alpha_source"` // key | metadata | implicit | mixed
	Targets    []string           `json:"targets"`      // self_attn, cross_attn, cross_attn_img, ffn, …
	Modules    []string           `json:"target_modules"`
	Layers     int                `json:"layers"` // distinct blocks adapted
	Blocks     []int              `json:"blocks,omitempty"`
	DType      string             `json:"dtype"`
	Tensors    int                `json:"tensors"`
	Params     int64              `json:"params"`
	Bytes      int64              `json:"bytes"`
	SHA256     string             `json:"sha256,omitempty"`
	Metadata   map[string]string  `json:"metadata"`
	Unusual    []string           `json:"unusual"`
	Problems   []string           `json:"problems"`
	// ScopeReady is true when Scope would apply this file exactly as trained without
	// conversion (see ScopeIssues).
	ScopeReady  bool     `json:"scope_ready"`
	ScopeIssues []string `json:"scope_issues,omitempty"`

	scaleOne bool
}

// UniformScale reports whether every pair has alpha == rank (scale 1).
func (r *Report) UniformScale() bool { return r.scaleOne }

// InspectOptions controls the work Inspect does beyond reading the header.
type InspectOptions struct {
	Hash bool // read the whole file for its sha256
}

// Inspect reads a safetensors file's header (and alpha scalars, if any) and reports
// what LoRA it is. Pickle checkpoints are refused by safetensors.Open.
func Inspect(path string, opt InspectOptions) (*Report, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, _, err := inspectFile(f, path)
	if err != nil {
		return nil, err
	}
	if opt.Hash {
		if r.SHA256, err = HashFile(path); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Analyze parses an open file and loads its alphas, for callers that also convert it.
func Analyze(f *safetensors.File) (*Parsed, error) {
	rd, err := os.Open(f.Path)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	p := Parse(f.Header)
	if err := p.LoadAlphas(rd); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return p, nil
}

func inspectFile(f *safetensors.File, path string) (*Report, *Parsed, error) {
	p, err := Analyze(f)
	if err != nil {
		return nil, nil, err
	}
	return Describe(p, path), p, nil
}

// Describe turns a parsed file into a report.
func Describe(p *Parsed, path string) *Report {
	h := p.Header
	r := &Report{
		Path: path, Kind: "wan-lora", Family: Unknown, Metadata: h.Metadata,
		Tensors: len(h.Tensors), Bytes: h.DataStart() + h.DataLen,
		Unusual: []string{}, Problems: append([]string{}, p.Problems...), Targets: []string{}, Modules: []string{},
	}
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	dtypes := map[safetensors.DType]int64{}
	for _, t := range h.Tensors {
		r.Params += t.NumElements()
		if k, ok := ParseKey(t.Name); ok && (k.Part == PartA || k.Part == PartB) {
			dtypes[t.DType] += t.NumElements()
		}
	}
	r.DType = dtypeSummary(dtypes)
	pairs := p.PairModules()
	if len(pairs) == 0 {
		names := make([]string, len(h.Tensors))
		for i, t := range h.Tensors {
			names[i] = t.Name
		}
		r.Kind, r.Model = foreignModel(names)
		if r.Kind == "" {
			r.Kind, r.Model = "unknown", "no Wan LoRA keys"
		}
		r.Base, r.BaseReason = BaseUnknown, "not a Wan LoRA: "+r.Model
		if r.Kind == "checkpoint" {
			r.BaseReason = "a full model checkpoint, not a LoRA: " + r.Model
		}
		r.ScopeIssues = []string{"not a Wan LoRA"}
		return r
	}
	r.Base, r.BaseReason = detectBase(p)
	if len(p.Unrecognized) > 0 && len(p.Unrecognized) > len(h.Tensors)/2 {
		// Mostly foreign keys with a few Wan-looking ones: say what it mostly is.
		if kind, model := foreignModel(p.Unrecognized); kind != "" {
			r.Kind, r.Model = kind, model
		}
	}
	r.describeFamily(p)
	r.describeModules(pairs)
	r.describeUnusual(p)
	r.describeScope(p)
	return r
}

func dtypeSummary(m map[safetensors.DType]int64) string {
	if len(m) == 0 {
		return ""
	}
	var ds []string
	for d := range m {
		ds = append(ds, string(d))
	}
	sort.Strings(ds)
	if len(ds) == 1 {
		return ds[0]
	}
	return "mixed:" + strings.Join(ds, ",")
}

func (r *Report) describeFamily(p *Parsed) {
	switch len(p.Families) {
	case 1:
		for f := range p.Families {
			r.Family = f
		}
	default:
		var fs []string
		best, n := Unknown, 0
		for f, c := range p.Families {
			fs = append(fs, string(f))
			if c > n || (c == n && f < best) {
				best, n = f, c
			}
		}
		sort.Strings(fs)
		r.Family = best
		r.Unusual = append(r.Unusual, "keys mix families: "+strings.Join(fs, ", "))
	}
	if r.Family == Comfy && p.Prefixes[""] > 0 {
		r.Unusual = append(r.Unusual, fmt.Sprintf("%d keys lack the diffusion_model. prefix (bare blocks.… names)", p.Prefixes[""]))
	}
}

func (r *Report) describeModules(pairs []*Module) {
	rankCount := map[int]int{}
	alphaCount := map[float64]int{}
	from := map[string]bool{}
	targets := map[string]bool{}
	subs := map[string]bool{}
	blocks := map[int]bool{}
	r.scaleOne = true
	for _, m := range pairs {
		rankCount[m.Rank]++
		alphaCount[m.Alpha]++
		from[m.AlphaFrom] = true
		targets[Target(m.Name)] = true
		subs[blockSub(m.Name)] = true
		if b := blockIndex(m.Name); b >= 0 {
			blocks[b] = true
		}
		if m.Scale() != 1 {
			r.scaleOne = false
		}
	}
	r.Rank = mostCommon(rankCount)
	if len(rankCount) > 1 {
		r.Ranks = map[string]int{}
		for _, m := range pairs {
			r.Ranks[m.Name] = m.Rank
		}
	}
	if len(alphaCount) == 1 {
		for a := range alphaCount {
			r.Alpha = &a
		}
	} else {
		r.Alphas = map[string]float64{}
		for _, m := range pairs {
			r.Alphas[m.Name] = m.Alpha
		}
	}
	switch len(from) {
	case 1:
		for f := range from {
			r.AlphaFrom = f
		}
	default:
		r.AlphaFrom = "mixed"
	}
	for t := range targets {
		r.Targets = append(r.Targets, t)
	}
	sort.Strings(r.Targets)
	for s := range subs {
		r.Modules = append(r.Modules, s)
	}
	sort.Strings(r.Modules)
	for b := range blocks {
		r.Blocks = append(r.Blocks, b)
	}
	sort.Ints(r.Blocks)
	r.Layers = len(r.Blocks)
}

func mostCommon(m map[int]int) int {
	best, n := 0, -1
	for k, c := range m {
		if c > n || (c == n && k > best) {
			best, n = k, c
		}
	}
	return best
}

func (r *Report) describeUnusual(p *Parsed) {
	var dora, diff int
	for _, n := range p.Order {
		m := p.Modules[n]
		if _, ok := m.Parts[PartDoRA]; ok {
			dora++
		}
		_, d := m.Parts[PartDiff]
		_, db := m.Parts[PartDiffB]
		if d || db {
			diff++
		}
	}
	if dora > 0 {
		r.Unusual = append(r.Unusual, fmt.Sprintf("DoRA: %d modules carry magnitude vectors", dora))
	}
	if diff > 0 {
		r.Unusual = append(r.Unusual, fmt.Sprintf("%d modules carry full-weight diff/diff_b deltas", diff))
	}
	if n := len(p.Unrecognized); n > 0 {
		show := p.Unrecognized
		if len(show) > 5 {
			show = show[:5]
		}
		r.Unusual = append(r.Unusual, fmt.Sprintf("%d keys not recognised as Wan LoRA keys: %s", n, strings.Join(show, ", ")+more(n, len(show))))
	}
	if strings.HasPrefix(r.DType, "mixed:") {
		r.Unusual = append(r.Unusual, "LoRA weights use several dtypes: "+strings.TrimPrefix(r.DType, "mixed:"))
	}
	if r.Ranks != nil {
		r.Unusual = append(r.Unusual, "ranks differ between modules")
	}
}

func more(total, shown int) string {
	if total > shown {
		return fmt.Sprintf(" (+%d more)", total-shown)
	}
	return ""
}

// describeScope says whether Scope would apply the file exactly as trained as-is
// (Scope's wan2_1/lora/utils.py): diffusers keys are ignored, alpha keys on
// diffusion_model. files are ignored, diff and DoRA tensors are dropped, and
// kohya I2V image keys are mangled (k_img → k.img).
func (r *Report) describeScope(p *Parsed) {
	var issues []string
	if len(p.Problems) > 0 {
		issues = append(issues, "the file has structural problems")
	}
	if p.Families[Diffusers] > 0 {
		issues = append(issues, "Scope ignores diffusers keys: the LoRA would load and do nothing")
	}
	if r.Family == Comfy && p.Prefixes["diffusion_model."] > 0 && !r.scaleOne {
		issues = append(issues, "Scope ignores alpha on diffusion_model. files: alpha/rank must be applied at install")
	}
	if p.Families[Kohya] > 0 && containsTarget(r.Targets, "cross_attn_img") {
		issues = append(issues, "Scope renames kohya k_img/v_img keys wrongly (to k.img/v.img)")
	}
	for _, u := range r.Unusual {
		if strings.HasPrefix(u, "DoRA") || strings.Contains(u, "diff/diff_b") {
			issues = append(issues, "Scope applies only lora_A/lora_B pairs: "+u+" would be dropped")
		}
	}
	if r.Base == BaseUnknown {
		issues = append(issues, "base model unknown")
	}
	r.ScopeIssues = issues
	r.ScopeReady = len(issues) == 0
}

func containsTarget(ts []string, t string) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// HashFile returns the hex sha256 of a file.
func HashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// DisplayName is a file's name without the .safetensors extension.
func DisplayName(path string) string {
	return strings.TrimSuffix(filepath.Base(path), ".safetensors")
}
