package aitk

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Severity says whether a Problem stops a run.
type Severity string

// Severities.
const (
	// Error: ai-toolkit will refuse or crash, or the run cannot produce a
	// usable Wan LoRA.
	Error Severity = "error"
	// Warning: it runs, but probably not as meant.
	Warning Severity = "warning"
)

// Problem is one finding of Validate.
type Problem struct {
	Severity Severity `json:"severity"`
	Field    string   `json:"field"` // e.g. config.process[0].datasets[1].num_frames
	Message  string   `json:"message"`
}

func (p Problem) String() string { return p.Field + ": " + p.Message }

// HasErrors reports whether any problem is an Error.
func HasErrors(ps []Problem) bool {
	return slices.ContainsFunc(ps, func(p Problem) bool { return p.Severity == Error })
}

// ValidateOptions are the facts about the run Validate cannot read from the
// config. Zero values skip the checks that need them.
type ValidateOptions struct {
	// GPUMemGiB is the memory of the GPU the run gets; 0 skips the check.
	GPUMemGiB float64
	// CollectBudget is how long a collector needs to copy one checkpoint off
	// the machine; a checkpoint that ai-toolkit prunes sooner is an error.
	// 0 skips the check.
	CollectBudget time.Duration
	// SecondsPerStep is the expected training speed for the timing check;
	// 0 uses MinSecondsPerStep, a fast case, so that the check errs toward
	// passing.
	SecondsPerStep float64
	// Env, when set, is the environment run.py will have: a ${VAR} it lacks
	// is an error. Unset, placeholders are reported as warnings.
	Env func(string) (string, bool)
	// Media, when set, counts the videos and images in a dataset folder
	// (ok false when it cannot tell), so that a video folder trained with
	// num_frames 1 is caught.
	Media func(folder string) (videos, images int, ok bool)
}

// MinSecondsPerStep is the step time the prune check assumes when none is
// given: about a Wan 2.1 1.3B image step on an H100.
const MinSecondsPerStep = 0.5

// jobNameOK is the UI's rule for config.name (ui/src/docs.tsx): letters,
// digits, underscores and dashes. The name becomes a folder, a file prefix
// and a glob pattern ({name}_*, {name}*), and is spliced into the config's
// JSON text for [name], so anything else can break the run or its resume.
var jobNameOK = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// maxNameLen keeps {name}_{step:09d}.safetensors within 255 bytes.
const maxNameLen = 255 - len("_000000000_high_noise.safetensors")

var trainerTypes = []string{"sd_trainer", "diffusion_trainer", "ui_trainer", "textual_inversion_trainer"}

var otherProcessTypes = []string{"reference_generator", "pure_lora_generator", "batch_img2img", "AceStepCaptioner",
	"Qwen3VLCaptioner", "Qwen3OmniCaptioner", "Ideogram4Captioner", "concept_replacer", "concept_slider",
	"dataset_tools", "sync_from_collection", "super_tagger", "image_reference_slider_trainer", "ultimate_slider_trainer"}

// Validate checks cfg against what ai-toolkit 0.12.26 accepts and what makes
// a usable Wan video LoRA, returning errors before warnings, each in config
// order.
func Validate(cfg *Config, opts ValidateOptions) []Problem {
	v := &validator{cfg: cfg, opts: opts}
	v.top()
	for i := range cfg.Config.Process {
		v.process(i, &cfg.Config.Process[i])
	}
	slices.SortStableFunc(v.ps, func(a, b Problem) int {
		if a.Severity == b.Severity {
			return 0
		}
		if a.Severity == Error {
			return -1
		}
		return 1
	})
	return v.ps
}

type validator struct {
	cfg  *Config
	opts ValidateOptions
	ps   []Problem
}

func (v *validator) errf(field, format string, a ...any) {
	v.ps = append(v.ps, Problem{Error, field, fmt.Sprintf(format, a...)})
}

func (v *validator) warnf(field, format string, a ...any) {
	v.ps = append(v.ps, Problem{Warning, field, fmt.Sprintf(format, a...)})
}

func (v *validator) top() {
	c := v.cfg
	switch c.Job {
	case "extension":
	case "":
		v.errf("job", "missing: run.py needs job: extension")
	case "train", "extract", "mod", "generate":
		v.errf("job", "%q is an ai-toolkit job, but LoRA training runs as job: extension", c.Job)
	default:
		v.errf("job", "unknown job type %q: run.py accepts extension (train, extract, mod, generate)", c.Job)
	}
	if n := lookup(c.doc, "config", "name"); n != nil && (n.Kind != yaml.ScalarNode || pyResolve(n) != any(n.Value)) {
		v.errf("config.name", "must be a string (ai-toolkit splices it into the config text)")
	} else {
		name := c.Config.Name
		switch {
		case name == "":
			v.errf("config.name", "missing: run.py needs a job name (it names the output folder and files)")
		case !jobNameOK.MatchString(name):
			v.errf("config.name", "%q: use only letters, digits, _ and - (ai-toolkit's rule; the name is a folder, a file prefix and a glob pattern)", name)
		case len(name) > maxNameLen:
			v.errf("config.name", "%d characters: checkpoint file names would pass 255 bytes (at most %d)", len(name), maxNameLen)
		}
	}
	if len(c.Config.Process) == 0 {
		v.errf("config.process", "missing or empty: nothing to run")
	}
	for _, name := range c.Placeholders {
		if v.opts.Env != nil {
			if _, ok := v.opts.Env(name); !ok {
				v.errf("${"+name+"}", "environment variable %s is not set: run.py stops (placeholders count even inside comments)", name)
			}
			continue
		}
		v.warnf("${"+name+"}", "run.py replaces this from the environment and stops if %s is unset (even inside a comment)", name)
	}
}

func (v *validator) process(i int, p *Process) {
	at := fmt.Sprintf("config.process[%d]", i)
	switch {
	case p.Type == "":
		v.errf(at+".type", "missing: run.py needs the process type (diffusion_trainer)")
		return
	case p.Type == "ui_trainer":
		v.warnf(at+".type", "ui_trainer needs AITK_JOB_ID and the UI database; diffusion_trainer runs with or without them")
	case slices.Contains(trainerTypes, p.Type):
	case slices.Contains(otherProcessTypes, p.Type):
		v.errf(at+".type", "%q is not a LoRA trainer; use diffusion_trainer", p.Type)
		return
	default:
		v.errf(at+".type", "unknown process type %q: ai-toolkit refuses it (use diffusion_trainer)", p.Type)
		return
	}
	if p.TrainingFolder == "" {
		v.errf(at+".training_folder", "missing: ai-toolkit cannot place the output without it")
	} else if !strings.HasPrefix(p.TrainingFolder, "/") {
		v.warnf(at+".training_folder", "%q is relative to run.py's working directory (container disk on a pod); use /workspace/output so saves survive a restart", p.TrainingFolder)
	}
	w, isWan := v.model(at, p)
	v.network(at, p, isWan)
	v.save(at, p)
	v.datasets(at, p, w, isWan)
	v.train(at, p)
	v.sample(at, p, w, isWan)
	v.logging(at, p)
	if isWan && v.opts.GPUMemGiB > 0 {
		v.memory(at, p)
	}
}

func (v *validator) model(at string, p *Process) (WanArch, bool) {
	m := p.Model
	if m == nil {
		v.errf(at+".model", "missing: ai-toolkit needs model.name_or_path and model.arch")
		return WanArch{}, false
	}
	at += ".model"
	var w WanArch
	var isWan bool
	switch {
	case m.Arch == "":
		v.errf(at+".arch", "missing: ai-toolkit then loads the model as Stable Diffusion 1 (set wan21, wan21_i2v, wan22_14b, wan22_14b_i2v or wan22_5b)")
	case !KnownArch(m.Arch):
		v.errf(at+".arch", "unknown arch %q: ai-toolkit would fall back to its Stable Diffusion loader (Wan arches: wan21, wan21_i2v, wan22_14b, wan22_14b_i2v, wan22_5b)", m.Arch)
	default:
		w, isWan = LookupWanArch(m.Arch)
		if !isWan {
			v.warnf(at+".arch", "%q is not a Wan model: Scope cannot use the LoRA", m.Arch)
		}
	}
	switch {
	case m.NameOrPath == "":
		v.errf(at+".name_or_path", "missing: ai-toolkit stops with 'name_or_path must be specified'")
	case isWan:
		if o, ok := modelArch(m.NameOrPath); ok && o.Arch != w.Arch {
			v.errf(at+".name_or_path", "%s is a %s model, but arch is %s", m.NameOrPath, o.Arch, w.Arch)
		} else if !ok && isHubID(m.NameOrPath) {
			v.warnf(at+".name_or_path", "%s is not a model ai-toolkit uses for %s (%s): it must be a Diffusers-format repo of that model", m.NameOrPath, w.Arch, strings.Join(w.Models, ", "))
		}
	}
	if isWan {
		if lp, _ := m.Extra["lora_path"].(string); lp != "" {
			v.errf(at+".lora_path", "ai-toolkit cannot load a LoRA into Wan this way; start from it with network.pretrained_lora_path")
		}
		if w.Experts == 2 && trainedExperts(w, m) == 0 {
			v.errf(at+".model_kwargs", "train_high_noise and train_low_noise are both false: nothing to train")
		}
	}
	return w, isWan
}

func (v *validator) network(at string, p *Process, isWan bool) {
	n := p.Network
	if n == nil {
		v.errf(at+".network", "missing: without it ai-toolkit fine-tunes the whole model instead of training a LoRA")
		return
	}
	at += ".network"
	if n.Type != "" && !strings.EqualFold(n.Type, "lora") {
		v.warnf(at+".type", "%q: Scope loads LoRA files; other network types may not load", n.Type)
	}
	if r := n.Rank(); r <= 0 {
		v.errf(at+".linear", "rank %d: must be positive", r)
	}
	if isWan && n.LinearAlpha != nil && n.Linear != nil && *n.LinearAlpha != float64(*n.Linear) {
		v.warnf(at+".linear_alpha", "ignored for Wan: ai-toolkit saves alpha = rank (%d), so the LoRA's scale is 1", *n.Linear)
	}
}

func (v *validator) save(at string, p *Process) {
	s := p.Save
	if s == nil {
		s = &Save{}
	}
	at += ".save"
	every := val(s.SaveEvery, 1000)
	keep := val(s.MaxStepSavesToKeep, 5)
	if every <= 0 {
		v.errf(at+".save_every", "%d: must be positive", every)
		return
	}
	switch {
	case keep < 0:
		v.errf(at+".max_step_saves_to_keep", "%d: a negative count makes ai-toolkit delete the oldest saves by Python slice rules; use 2 or more", keep)
		return
	case keep == 0:
		v.warnf(at+".max_step_saves_to_keep", "0 keeps every save (Python's [:-0] removes nothing): the disk fills up")
		return
	case keep == 1:
		v.errf(at+".max_step_saves_to_keep", "1: each save is deleted as soon as the next is written, so a collector that misses one window loses it; keep 2 or more")
		return
	}
	if v.opts.CollectBudget <= 0 {
		return
	}
	sps := v.opts.SecondsPerStep
	if sps <= 0 {
		sps = MinSecondsPerStep
	}
	life := time.Duration(float64(keep*every) * sps * float64(time.Second))
	if life < v.opts.CollectBudget {
		v.errf(at+".save_every", "a save lives about %s (%d saves kept × %d steps × %.2gs/step) before ai-toolkit prunes it, less than the %s a collector needs; raise save_every or max_step_saves_to_keep",
			life.Round(time.Second), keep, every, sps, v.opts.CollectBudget)
	}
}

func (v *validator) datasets(at string, p *Process, w WanArch, isWan bool) {
	if len(p.Datasets) == 0 {
		v.errf(at+".datasets", "missing or empty: nothing to train on")
		return
	}
	trainCache := p.Train != nil && val(p.Train.CacheTextEmbeddings, false)
	anyCache := trainCache
	for _, d := range p.Datasets {
		anyCache = anyCache || val(d.CacheTextEmbeddings, false)
	}
	for j, d := range p.Datasets {
		dat := fmt.Sprintf("%s.datasets[%d]", at, j)
		folder := d.DatasetPath
		if folder == "" {
			folder = d.FolderPath
		}
		if folder == "" {
			v.errf(dat+".folder_path", "missing: the dataset has no folder")
		}
		if anyCache && !trainCache && !val(d.CacheTextEmbeddings, false) {
			v.errf(dat+".cache_text_embeddings", "other datasets cache text embeddings: ai-toolkit requires all or none (set train.cache_text_embeddings instead)")
		}
		if r := val(d.CaptionDropoutRate, 0); r < 0 || r > 1 {
			v.errf(dat+".caption_dropout_rate", "%g: must be between 0 and 1", r)
		}
		frames := d.Frames()
		switch {
		case frames < 1:
			v.errf(dat+".num_frames", "%d: must be at least 1", frames)
		case frames > 1 && (frames-1)%4 != 0 && isWan && !val(d.AutoFrameCount, false):
			lo := frames - (frames-1)%4
			v.warnf(dat+".num_frames", "%d is not 4n+1: Wan's VAE encodes %d frames and drops the last %d; use %d or %d", frames, lo, frames-lo, lo, lo+4)
		}
		if d.IsVideo() {
			if !val(d.Buckets, true) {
				v.errf(dat+".buckets", "false: video datasets need buckets")
			}
			if a, _ := d.Extra["augments"].([]any); len(a) > 0 {
				v.errf(dat+".augments", "augments are not supported for video datasets")
			}
			if a, _ := d.Extra["augmentations"].([]any); len(a) > 0 {
				v.errf(dat+".augmentations", "augmentations are not supported for video datasets")
			}
			if isWan && d.FPS == nil && (val(d.AutoFrameCount, false) || !val(d.ShrinkVideoToFrames, true)) {
				v.warnf(dat+".fps", "unset, so 24: %s is a %d fps model and frames are picked at this rate", w.Arch, w.DatasetFPS)
			}
			if val(d.AutoFrameCount, false) && val(d.BatchSize, valTrain(p, func(t *Train) *int { return t.BatchSize }, 1)) > 1 {
				v.warnf(dat+".auto_frame_count", "clips of different lengths do not batch: use batch_size 1")
			}
		} else if isWan {
			msg := "1: ai-toolkit loads only images from this folder and ignores videos (a folder of only videos fails with 'no images found'); set num_frames, e.g. 81, to train on clips"
			vids, imgs, known := 0, 0, false
			if v.opts.Media != nil && folder != "" {
				vids, imgs, known = v.opts.Media(folder)
			}
			switch {
			case known && vids > 0 && imgs == 0:
				v.errf(dat+".num_frames", "%s", msg)
			case known && vids == 0:
				// an image dataset: num_frames 1 is right
			default:
				v.warnf(dat+".num_frames", "%s", msg)
			}
		}
		for k, r := range d.ResolutionValues() {
			f := dat + ".resolution"
			if d.Resolution != nil && !d.Resolution.scalar {
				f = fmt.Sprintf("%s[%d]", f, k)
			}
			switch {
			case r <= 0:
				v.errf(f, "%d: must be positive", r)
			case isWan && r%w.BucketDiv != 0:
				v.warnf(f, "%d is not a multiple of %d: %s buckets round every side down to a multiple of %d, so %d or %d says what you get", r, w.BucketDiv, w.Arch, w.BucketDiv, r-r%w.BucketDiv, r-r%w.BucketDiv+w.BucketDiv)
			}
		}
	}
}

func valTrain(p *Process, f func(*Train) *int, def int) int {
	if p.Train == nil {
		return def
	}
	return val(f(p.Train), def)
}

func (v *validator) train(at string, p *Process) {
	t := p.Train
	if t == nil {
		t = &Train{}
	}
	at += ".train"
	if s := val(t.Steps, 1000); s <= 0 {
		v.errf(at+".steps", "%d: must be positive", s)
	}
	if lr := val(t.LR, 1e-6); lr <= 0 || math.IsNaN(lr) {
		v.errf(at+".lr", "%g: must be positive", lr)
	}
	if b := val(t.BatchSize, 1); b < 1 {
		v.errf(at+".batch_size", "%d: must be at least 1", b)
	}
	caching := val(t.CacheTextEmbeddings, false)
	for _, d := range p.Datasets {
		caching = caching || val(d.CacheTextEmbeddings, false)
	}
	unload := val(t.UnloadTextEncoder, false)
	if (unload || caching) && val(t.TrainTextEncoder, false) {
		v.errf(at+".train_text_encoder", "cannot train the text encoder while unloading it (unload_text_encoder / cache_text_embeddings)")
	}
	switch {
	case unload && caching:
		v.warnf(at+".unload_text_encoder", "set together with cache_text_embeddings: the cached captions win; ai-toolkit says to use one or the other")
	case unload:
		what := "the trigger word " + fmt.Sprintf("%q", p.TriggerWord)
		if p.TriggerWord == "" {
			what = "a blank prompt (no trigger_word is set)"
		}
		v.warnf(at+".unload_text_encoder", "captions are ignored: every clip trains with %s; use cache_text_embeddings to keep captions", what)
	}
}

func (v *validator) sample(at string, p *Process, w WanArch, isWan bool) {
	s := p.Sample
	if s == nil || (p.Train != nil && val(p.Train.DisableSampling, false)) {
		return
	}
	at += ".sample"
	if e := val(s.SampleEvery, 100); e <= 0 {
		v.errf(at+".sample_every", "%d: must be positive", e)
	}
	if !isWan {
		return
	}
	check := func(f string, wd, ht, nf *int) {
		if wd != nil && *wd%16 != 0 {
			v.errf(f+".width", "%d: Wan's pipeline needs a multiple of 16", *wd)
		}
		if ht != nil && *ht%16 != 0 {
			v.errf(f+".height", "%d: Wan's pipeline needs a multiple of 16", *ht)
		}
		if nf != nil && *nf > 1 && (*nf-1)%4 != 0 {
			lo := *nf - (*nf-1)%4
			v.warnf(f+".num_frames", "%d is not 4n+1: Wan's pipeline rounds it; use %d or %d", *nf, lo, lo+4)
		}
	}
	wd, ht, _ := s.Dims()
	check(at, Ptr(wd), Ptr(ht), s.NumFrames)
	for k, it := range s.Samples {
		check(fmt.Sprintf("%s.samples[%d]", at, k), it.Width, it.Height, it.NumFrames)
	}
	if w.I2V {
		missing := len(s.Samples) == 0 && len(s.Prompts) > 0
		for _, it := range s.Samples {
			if c, _ := it.Extra["ctrl_img"].(string); c == "" {
				missing = true
			}
		}
		if missing {
			v.warnf(at, "%s samples need a start image (ctrl_img on each sample)", w.Arch)
		}
	}
}

func (v *validator) logging(at string, p *Process) {
	l := p.Logging
	if l == nil {
		l = &Logging{}
	}
	if !val(l.UseUILogger, false) {
		v.warnf(at+".logging.use_ui_logger", "not true: ai-toolkit writes no loss_log.db, so there is no loss history to chart")
		return
	}
	if e := val(l.LogEvery, 100); e > 1 {
		v.warnf(at+".logging.log_every", "%d: loss is recorded every %d steps; 1 records every step", e, e)
	}
}

func (v *validator) memory(at string, p *Process) {
	e, ok := EstimateMemory(p)
	if !ok {
		return
	}
	gpu := v.opts.GPUMemGiB
	phase := "training"
	switch e.GiB {
	case e.LoadGiB:
		phase = "loading the model"
	case e.SampleGiB:
		phase = "sampling"
	}
	hint := "quantize, low_vram, fewer frames or a lower resolution"
	msg := fmt.Sprintf("about %.0f GiB needed (%s; rough estimate) on a %.0f GiB GPU: try %s", e.GiB, phase, gpu, hint)
	switch {
	case e.GiB > gpu:
		v.errf(at+".model", "%s", msg)
	case e.GiB > 0.9*gpu:
		v.warnf(at+".model", "%s", strings.Replace(msg, "needed", "needed, close to the limit", 1))
	}
}
