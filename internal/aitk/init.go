package aitk

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Base is a model Init can make a config for.
type Base struct {
	Name    string   `json:"name"`              // what users type: wan2.1-t2v-14b
	Aliases []string `json:"aliases,omitempty"` // other accepted spellings
	Arch    string   `json:"arch"`              // written as the UI writes it (wan21:14b)
	Model   string   `json:"model"`             // name_or_path
	Label   string   `json:"label"`             // the UI's label
}

// Bases are the Wan models of ai-toolkit's UI (ui/src/app/jobs/new/options.tsx).
var bases = []Base{
	{Name: "wan2.1-t2v-1.3b", Aliases: []string{"wan2.1-1.3b", "wan21-1.3b"}, Arch: "wan21:1b", Model: "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", Label: "Wan 2.1 (1.3B)"},
	{Name: "wan2.1-t2v-14b", Aliases: []string{"wan2.1-14b", "wan21-14b"}, Arch: "wan21:14b", Model: "Wan-AI/Wan2.1-T2V-14B-Diffusers", Label: "Wan 2.1 (14B)"},
	{Name: "wan2.1-i2v-14b-480p", Aliases: []string{"wan2.1-i2v-14b"}, Arch: "wan21_i2v:14b480p", Model: "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", Label: "Wan 2.1 I2V (14B-480P)"},
	{Name: "wan2.1-i2v-14b-720p", Arch: "wan21_i2v:14b", Model: "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", Label: "Wan 2.1 I2V (14B-720P)"},
	{Name: "wan2.2-t2v-a14b", Aliases: []string{"wan2.2-t2v-14b", "wan2.2-14b"}, Arch: "wan22_14b:t2v", Model: "ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16", Label: "Wan 2.2 (14B)"},
	{Name: "wan2.2-i2v-a14b", Aliases: []string{"wan2.2-i2v-14b"}, Arch: "wan22_14b_i2v", Model: "ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16", Label: "Wan 2.2 I2V (14B)"},
	{Name: "wan2.2-ti2v-5b", Aliases: []string{"wan2.2-5b"}, Arch: "wan22_5b", Model: "Wan-AI/Wan2.2-TI2V-5B-Diffusers", Label: "Wan 2.2 TI2V (5B)"},
}

// Bases returns the models Init knows.
func Bases() []Base { return slices.Clone(bases) }

// LookupBase finds a base by name or alias (case-insensitive).
func LookupBase(name string) (Base, bool) {
	n := strings.ToLower(strings.TrimSpace(name))
	for _, b := range bases {
		if b.Name == n || slices.Contains(b.Aliases, n) {
			return b, true
		}
	}
	return Base{}, false
}

// InitOptions describe the job Init makes.
type InitOptions struct {
	Base        string  // a Base name, e.g. "wan2.1-t2v-14b"
	DatasetDir  string  // folder_path, as the training machine sees it
	Name        string  // config.name; default: the dataset folder's name
	TriggerWord string  // optional
	GPUMemGiB   float64 // the GPU's memory; 0 means 24
	// Steps overrides the preset's step count (3000, the UI's default).
	Steps int
	// TrainingFolder defaults to /workspace/output (a pod's volume).
	TrainingFolder string
	// ControlDB is the sqlite_db_path written (the run's own job database);
	// default /workspace/scopectl/<name>/control.db. It does nothing unless
	// the file exists and AITK_JOB_ID is set.
	ControlDB string
}

// DefaultGPUMemGiB is what Init plans for when no GPU is named: the 24 GB
// class ai-toolkit's Wan examples target.
const DefaultGPUMemGiB = 24

// DefaultTrainingFolder keeps outputs on a RunPod volume.
const DefaultTrainingFolder = "/workspace/output"

// samplePrompts are the first four of the UI's default sample prompts
// (ui/src/helpers/defaultSamples.ts); video samples are slow, so four.
var samplePrompts = []string{
	"woman with red hair, playing chess at the park, bomb going off in the background",
	"a woman holding a coffee cup, in a beanie, sitting at a cafe",
	"a horse is a DJ at a night club, fish eye lens, smoke machine, lazer lights, holding a martini",
	"a man showing off his cool new t shirt at the beach, a shark is jumping out of the water in the background",
}

// clipLadder is the order Init tries (frames, resolution) in until the
// estimate fits: Wan's native 81 frames (5 s at 16 fps) at about 480p first.
var clipLadder = []struct{ frames, res int }{
	{81, 640}, {65, 640}, {49, 640}, {81, 512}, {41, 640}, {49, 512}, {33, 640}, {33, 512}, {25, 512}, {17, 512}, {17, 384}, {9, 384},
}

// Init returns a new config for opts.Base from ai-toolkit's own defaults
// (the UI's base job and Wan preset, the example YAMLs for what the UI leaves
// open), sized for the GPU: quantization and low_vram by memory, then the
// largest clip length and resolution whose EstimateMemory fits in 90% of it.
// The config passes Validate without errors; Config.Env holds the
// environment the run should have (HF_HOME on the volume), Config.Notes the
// choices made.
func Init(opts InitOptions) (*Config, error) {
	b, ok := LookupBase(opts.Base)
	if !ok {
		var names []string
		for _, b := range bases {
			names = append(names, b.Name)
		}
		return nil, fmt.Errorf("unknown base %q (one of %s)", opts.Base, strings.Join(names, ", "))
	}
	w, _ := LookupWanArch(b.Arch)
	if opts.DatasetDir == "" {
		return nil, errors.New("a dataset folder is needed")
	}
	name := opts.Name
	if name == "" {
		name = nameFromDir(opts.DatasetDir)
	}
	if !jobNameOK.MatchString(name) || len(name) > maxNameLen {
		return nil, fmt.Errorf("job name %q: use only letters, digits, _ and - (ai-toolkit's rule)", name)
	}
	gpu := opts.GPUMemGiB
	if gpu <= 0 {
		gpu = DefaultGPUMemGiB
	}
	folder := opts.TrainingFolder
	if folder == "" {
		folder = DefaultTrainingFolder
	}
	db := opts.ControlDB
	if db == "" {
		db = "/workspace/scopectl/" + name + "/control.db"
	}
	steps := opts.Steps
	if steps <= 0 {
		steps = 3000
	}
	size, _ := sizeOf(w, b.Model)
	big := size.params > 10e9

	// quantization: the UI presets quantize everything but the 1.3B transformer.
	quantize := w.Arch != "wan21" || big
	lowVRAM := w.Experts == 2 || w.Arch == "wan22_5b" // the UI presets' low_vram
	if (big && gpu < 40) || gpu < 24 {
		lowVRAM = true // the 14B 24 GB example; below 24 GB the text encoder's bf16 load needs the room
	}
	if gpu >= 80 && w.Experts == 1 {
		lowVRAM = false
	}
	qtype := "qfloat8"
	if w.Experts == 2 && gpu < 40 {
		// the Wan 2.2 14B 24 GB example: 4 bit with an accuracy recovery adapter
		qtype = "uint4|ostris/accuracy_recovery_adapters/wan22_14b_t2i_torchao_uint4.safetensors"
		if w.I2V {
			qtype = "uint4|ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors"
		}
	}
	timestep := "sigmoid"
	switch {
	case w.Experts == 2:
		timestep = "linear"
	case w.I2V, w.Arch == "wan22_5b":
		timestep = "weighted"
	}
	fps := w.DatasetFPS

	dataset := Dataset{
		FolderPath:          opts.DatasetDir,
		CaptionExt:          "txt",
		DefaultCaption:      Ptr(""),
		CaptionDropoutRate:  Ptr(0.05),
		ShuffleTokens:       Ptr(false),
		CacheLatentsToDisk:  Ptr(true),
		Resolution:          &Resolutions{Values: []int{640}},
		NumFrames:           Ptr(81),
		ShrinkVideoToFrames: Ptr(true),
		FPS:                 Ptr(fps),
		NumRepeats:          Ptr(1),
	}
	if w.Arch == "wan22_5b" {
		dataset.DoI2V = Ptr(true)
	}
	sw, sh, sf := 832, 480, 41
	if w.Arch == "wan22_5b" {
		sw, sh, sf = 768, 768, 121
	}
	prompts := slices.Clone(samplePrompts)
	if opts.TriggerWord != "" {
		for i := range prompts {
			prompts[i] = "[trigger] " + prompts[i]
		}
	}
	guidance, sampleSteps := 5.0, 30
	if strings.HasPrefix(w.Arch, "wan22") {
		guidance, sampleSteps = 3.5, 25
	}
	train := &Train{
		BatchSize:            Ptr(1),
		Steps:                Ptr(steps),
		GradientAccumulation: Ptr(1),
		LR:                   Ptr(1e-4),
		Optimizer:            "adamw8bit",
		UnloadTextEncoder:    Ptr(false),
		CacheTextEmbeddings:  Ptr(true), // keeps captions and frees the text encoder
		TrainTextEncoder:     Ptr(false),
		GradientCheckpoint:   Ptr(true),
		DType:                "bf16",
		TimestepType:         timestep,
		NoiseScheduler:       "flowmatch",
		Extra: map[string]any{
			"train_unet":       true,
			"optimizer_params": map[string]any{"weight_decay": 1e-4},
			"ema_config":       map[string]any{"use_ema": false, "ema_decay": 0.99},
			"loss_type":        "mse",
		},
	}
	var notes []string
	if w.Experts == 2 {
		train.Extra["switch_boundary_every"] = 10 // the Wan 2.2 14B example
	}
	if w.I2V {
		train.DisableSampling = Ptr(true)
		notes = append(notes, "sampling is off: "+w.Arch+" samples need a start image (add ctrl_img to each sample and set train.disable_sampling: false)")
	}
	model := &Model{
		Arch:       b.Arch,
		NameOrPath: b.Model,
		Quantize:   Ptr(quantize),
		QuantizeTE: Ptr(true),
		QType:      qtype,
		QTypeTE:    "qfloat8",
		LowVRAM:    Ptr(lowVRAM),
	}
	if w.Experts == 2 {
		model.ModelKwargs = map[string]any{"train_high_noise": true, "train_low_noise": true}
	}
	p := Process{
		Type:                "diffusion_trainer",
		TrainingFolder:      folder,
		SQLiteDBPath:        db,
		Device:              "cuda",
		TriggerWord:         opts.TriggerWord,
		PerformanceLogEvery: Ptr(10),
		Network:             &Network{Type: "lora", Linear: Ptr(32), LinearAlpha: Ptr(32.0)},
		Save:                &Save{DType: "bf16", SaveEvery: Ptr(250), MaxStepSavesToKeep: Ptr(4), Extra: map[string]any{"push_to_hub": false}},
		Datasets:            []Dataset{dataset},
		Train:               train,
		Model:               model,
		Sample: &Sample{
			Sampler:         "flowmatch",
			SampleEvery:     Ptr(250),
			SampleStartStep: Ptr(0),
			Width:           Ptr(sw),
			Height:          Ptr(sh),
			NumFrames:       Ptr(sf),
			FPS:             Ptr(fps),
			Prompts:         prompts,
			Seed:            Ptr(42),
			WalkSeed:        Ptr(true),
			GuidanceScale:   Ptr(guidance),
			SampleSteps:     Ptr(sampleSteps),
		},
		Logging: &Logging{LogEvery: Ptr(1), UseUILogger: Ptr(true)},
	}

	// the longest clip and largest size that fit
	fit := false
	var est MemoryEstimate
	for _, c := range clipLadder {
		p.Datasets[0].NumFrames = Ptr(c.frames)
		p.Datasets[0].Resolution = &Resolutions{Values: []int{c.res}}
		est, _ = EstimateMemory(&p)
		if est.GiB <= 0.9*gpu {
			fit = true
			break
		}
	}
	if !fit && w.Experts == 1 {
		// last resort before giving up: offload the transformer's layers
		model.LayerOffloading = Ptr(true)
		model.LayerOffloadingPercent = Ptr(0.5)
		for _, c := range clipLadder {
			p.Datasets[0].NumFrames = Ptr(c.frames)
			p.Datasets[0].Resolution = &Resolutions{Values: []int{c.res}}
			est, _ = EstimateMemory(&p)
			if est.GiB <= 0.9*gpu {
				fit = true
				notes = append(notes, "layer_offloading: half the transformer's layers stay in host memory (slower)")
				break
			}
		}
	}
	if !fit {
		return nil, fmt.Errorf("%s needs about %.0f GiB even at %d frames of %dpx; a %.0f GiB GPU is too small", b.Name, est.GiB, clipLadder[len(clipLadder)-1].frames, clipLadder[len(clipLadder)-1].res, gpu)
	}
	d := p.Datasets[0]
	notes = append(notes, fmt.Sprintf("clips train as %d frames at about %dpx (%d×%d area); estimated %.0f GiB of %.0f GiB", *d.NumFrames, d.Resolution.Values[0], d.Resolution.Values[0], d.Resolution.Values[0], est.GiB, gpu))

	cfg := &Config{
		Job: "extension",
		Config: JobConfig{
			Name:    name,
			Process: []Process{p},
		},
		Meta: map[string]any{"name": "[name]", "version": "1.0"},
		Env: map[string]string{
			"HF_HOME":          "/workspace/hf", // base weights download once, onto the volume
			"PYTHONUNBUFFERED": "1",             // log lines arrive as they are printed
		},
		Notes: notes,
	}
	return cfg, nil
}

// nameFromDir turns a folder's name into a valid job name.
func nameFromDir(dir string) string {
	dir = strings.TrimRight(strings.ReplaceAll(dir, "\\", "/"), "/")
	base := dir[strings.LastIndex(dir, "/")+1:]
	var sb strings.Builder
	for _, r := range base {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			sb.WriteRune(r)
		default:
			sb.WriteByte('_')
		}
	}
	s := strings.Trim(sb.String(), "_")
	if s == "" {
		s = "lora"
	}
	if len(s) > 64 {
		s = s[:64]
	}
	return s + "_lora"
}
