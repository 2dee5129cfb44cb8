package aitk

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Format is the syntax of a job config file.
type Format string

// The formats run.py accepts, chosen by the file's extension
// (toolkit/config.py get_config): .json and .jsonc are read with json.loads
// (so a .jsonc file may not hold comments either), .yaml and .yml with PyYAML.
const (
	YAML Format = "yaml"
	JSON Format = "json"
)

// FormatOf returns the format run.py would read path as, or an error for an
// extension it refuses ("must be a json or yaml file").
func FormatOf(path string) (Format, error) {
	switch {
	case strings.HasSuffix(path, ".json"), strings.HasSuffix(path, ".jsonc"):
		return JSON, nil
	case strings.HasSuffix(path, ".yaml"), strings.HasSuffix(path, ".yml"):
		return YAML, nil
	}
	return "", fmt.Errorf("config %s: ai-toolkit reads only .json, .jsonc, .yaml and .yml files", filepath.Base(path))
}

// ErrEnvUnset is wrapped by Parse when a ${VAR} placeholder names a variable
// that is not set; run.py stops with the same condition.
var ErrEnvUnset = errors.New("environment variable not set")

// envRef is toolkit/config.py's placeholder pattern, applied to the whole file
// text (comments included) before it is parsed.
var envRef = regexp.MustCompile(`\$\{([^}]+)\}`)

// ParseOptions says how much of run.py's preprocessing Parse applies.
type ParseOptions struct {
	// Expand applies what run.py does before the trainer sees the config:
	// ${VAR} placeholders anywhere in the text are replaced from Env (an unset
	// variable is an error wrapping ErrEnvUnset), and "[name]" in any key or
	// string is replaced by config.name (or Name). Leave it off to edit a
	// config and write it back without expanding secrets into it.
	Expand bool
	// Env looks variables up; nil means os.LookupEnv.
	Env func(string) (string, bool)
	// Name overrides config.name for [name] tags, like run.py -n NAME.
	Name string
}

// Config is one ai-toolkit job config: typed fields for what scopectl reads
// or sets, and every other key kept (Extra maps, and the parsed document) so
// that Marshal writes back all that ai-toolkit knows and this package does
// not model, in the original order and with the original comments.
type Config struct {
	Job    string         `yaml:"job,omitempty" json:"job,omitempty"`
	Config JobConfig      `yaml:"config" json:"config"`
	Meta   map[string]any `yaml:"meta,omitempty" json:"meta,omitempty"`
	Extra  map[string]any `yaml:",inline" json:"-"`

	// Placeholders lists the ${VAR} names found in the text, in order of first
	// appearance (after expansion when ParseOptions.Expand was set, so then it
	// is empty).
	Placeholders []string `yaml:"-" json:"-"`

	// Env is the environment the run should have, for configs made by Init
	// (ai-toolkit reads HF_HOME and the like from the environment, not the
	// file). Marshal does not write it.
	Env map[string]string `yaml:"-" json:"-"`
	// Notes say what Init chose and why. Marshal does not write them.
	Notes []string `yaml:"-" json:"-"`

	doc     *yaml.Node // the parsed document (a mapping), nil for a new config
	docHead string     // comment above the document (YAML)
}

// JobConfig is the config: section.
type JobConfig struct {
	Name    string         `yaml:"name,omitempty"`
	Process []Process      `yaml:"process,omitempty"`
	Extra   map[string]any `yaml:",inline"`
}

// Process is one entry of config.process. Pointer fields are nil when the key
// is absent; the methods named after them return ai-toolkit's default then.
type Process struct {
	Type                string         `yaml:"type,omitempty"`
	TrainingFolder      string         `yaml:"training_folder,omitempty"`
	SQLiteDBPath        string         `yaml:"sqlite_db_path,omitempty"`
	Device              string         `yaml:"device,omitempty"`
	TriggerWord         string         `yaml:"trigger_word,omitempty"`
	PerformanceLogEvery *int           `yaml:"performance_log_every,omitempty"`
	Network             *Network       `yaml:"network,omitempty"`
	Save                *Save          `yaml:"save,omitempty"`
	Datasets            []Dataset      `yaml:"datasets,omitempty"`
	Train               *Train         `yaml:"train,omitempty"`
	Model               *Model         `yaml:"model,omitempty"`
	Sample              *Sample        `yaml:"sample,omitempty"`
	Logging             *Logging       `yaml:"logging,omitempty"`
	Extra               map[string]any `yaml:",inline"`
}

// Network is process.network (toolkit/config_modules.py NetworkConfig).
type Network struct {
	Type        string         `yaml:"type,omitempty"` // default "lora"
	Linear      *int           `yaml:"linear,omitempty"`
	LinearAlpha *float64       `yaml:"linear_alpha,omitempty"` // ignored for Wan: alpha is forced to the rank
	Extra       map[string]any `yaml:",inline"`
}

// Save is process.save (SaveConfig).
type Save struct {
	DType              string         `yaml:"dtype,omitempty"`                  // default float16
	SaveEvery          *int           `yaml:"save_every,omitempty"`             // default 1000
	MaxStepSavesToKeep *int           `yaml:"max_step_saves_to_keep,omitempty"` // default 5
	Extra              map[string]any `yaml:",inline"`
}

// Dataset is one entry of process.datasets (DatasetConfig).
type Dataset struct {
	FolderPath          string         `yaml:"folder_path,omitempty"`
	DatasetPath         string         `yaml:"dataset_path,omitempty"`
	CaptionExt          string         `yaml:"caption_ext,omitempty"` // default ".txt"; a dot is added
	DefaultCaption      *string        `yaml:"default_caption,omitempty"`
	TriggerWord         string         `yaml:"trigger_word,omitempty"`
	CaptionDropoutRate  *float64       `yaml:"caption_dropout_rate,omitempty"`
	ShuffleTokens       *bool          `yaml:"shuffle_tokens,omitempty"`
	CacheLatents        *bool          `yaml:"cache_latents,omitempty"`
	CacheLatentsToDisk  *bool          `yaml:"cache_latents_to_disk,omitempty"`
	CacheTextEmbeddings *bool          `yaml:"cache_text_embeddings,omitempty"`
	Resolution          *Resolutions   `yaml:"resolution,omitempty"` // default 512
	NumFrames           *int           `yaml:"num_frames,omitempty"` // default 1 (images)
	ShrinkVideoToFrames *bool          `yaml:"shrink_video_to_frames,omitempty"`
	FPS                 *int           `yaml:"fps,omitempty"` // default 24
	AutoFrameCount      *bool          `yaml:"auto_frame_count,omitempty"`
	DoI2V               *bool          `yaml:"do_i2v,omitempty"`
	NumRepeats          *int           `yaml:"num_repeats,omitempty"`
	BatchSize           *int           `yaml:"batch_size,omitempty"`
	Buckets             *bool          `yaml:"buckets,omitempty"` // default true
	IsReg               *bool          `yaml:"is_reg,omitempty"`
	Extra               map[string]any `yaml:",inline"`
}

// Train is process.train (TrainConfig).
type Train struct {
	BatchSize            *int           `yaml:"batch_size,omitempty"`
	Steps                *int           `yaml:"steps,omitempty"` // default 1000
	GradientAccumulation *int           `yaml:"gradient_accumulation,omitempty"`
	LR                   *float64       `yaml:"lr,omitempty"`
	Optimizer            string         `yaml:"optimizer,omitempty"`
	UnloadTextEncoder    *bool          `yaml:"unload_text_encoder,omitempty"`
	CacheTextEmbeddings  *bool          `yaml:"cache_text_embeddings,omitempty"`
	TrainTextEncoder     *bool          `yaml:"train_text_encoder,omitempty"`
	GradientCheckpoint   *bool          `yaml:"gradient_checkpointing,omitempty"` // default true
	DType                string         `yaml:"dtype,omitempty"`
	TimestepType         string         `yaml:"timestep_type,omitempty"`
	NoiseScheduler       string         `yaml:"noise_scheduler,omitempty"`
	DisableSampling      *bool          `yaml:"disable_sampling,omitempty"`
	SkipFirstSample      *bool          `yaml:"skip_first_sample,omitempty"`
	Extra                map[string]any `yaml:",inline"`
}

// Model is process.model (ModelConfig).
type Model struct {
	Arch                   string         `yaml:"arch,omitempty"` // "wan21:14b" reads as "wan21"
	NameOrPath             string         `yaml:"name_or_path,omitempty"`
	Quantize               *bool          `yaml:"quantize,omitempty"`    // default false
	QuantizeTE             *bool          `yaml:"quantize_te,omitempty"` // default: quantize
	QType                  string         `yaml:"qtype,omitempty"`       // default qfloat8; "qtype|adapter" adds an accuracy recovery adapter
	QTypeTE                string         `yaml:"qtype_te,omitempty"`
	LowVRAM                *bool          `yaml:"low_vram,omitempty"`
	LayerOffloading        *bool          `yaml:"layer_offloading,omitempty"`
	LayerOffloadingPercent *float64       `yaml:"layer_offloading_transformer_percent,omitempty"`
	ModelKwargs            map[string]any `yaml:"model_kwargs,omitempty"`
	Extra                  map[string]any `yaml:",inline"`
}

// Sample is process.sample (SampleConfig).
type Sample struct {
	Sampler         string         `yaml:"sampler,omitempty"`
	SampleEvery     *int           `yaml:"sample_every,omitempty"` // default 100
	SampleStartStep *int           `yaml:"sample_start_step,omitempty"`
	Width           *int           `yaml:"width,omitempty"`  // default 512
	Height          *int           `yaml:"height,omitempty"` // default 512
	NumFrames       *int           `yaml:"num_frames,omitempty"`
	FPS             *int           `yaml:"fps,omitempty"`
	Prompts         []string       `yaml:"prompts,omitempty"`
	Samples         []SampleItem   `yaml:"samples,omitempty"` // the UI's form of prompts
	Neg             string         `yaml:"neg,omitempty"`
	Seed            *int           `yaml:"seed,omitempty"`
	WalkSeed        *bool          `yaml:"walk_seed,omitempty"`
	GuidanceScale   *float64       `yaml:"guidance_scale,omitempty"`
	SampleSteps     *int           `yaml:"sample_steps,omitempty"`
	Extra           map[string]any `yaml:",inline"`
}

// SampleItem is one entry of sample.samples; zero fields take the sample
// section's values.
type SampleItem struct {
	Prompt    string         `yaml:"prompt,omitempty"`
	Width     *int           `yaml:"width,omitempty"`
	Height    *int           `yaml:"height,omitempty"`
	NumFrames *int           `yaml:"num_frames,omitempty"`
	FPS       *int           `yaml:"fps,omitempty"`
	Extra     map[string]any `yaml:",inline"`
}

// Logging is process.logging (LoggingConfig). Loss history (loss_log.db)
// exists only with use_ui_logger: true; log_every defaults to 100.
type Logging struct {
	LogEvery    *int           `yaml:"log_every,omitempty"`
	UseUILogger *bool          `yaml:"use_ui_logger,omitempty"`
	Extra       map[string]any `yaml:",inline"`
}

// Resolutions is a dataset's resolution: one int or a list (each value makes
// a copy of the dataset at that size, preprocess_dataset_raw_config).
type Resolutions struct {
	Values []int
	scalar bool // written as a single int
}

// UnmarshalYAML accepts an int or a list of ints.
func (r *Resolutions) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var v int
		if err := n.Decode(&v); err != nil {
			return err
		}
		r.Values, r.scalar = []int{v}, true
		return nil
	}
	r.scalar = false
	return n.Decode(&r.Values)
}

// MarshalYAML writes the form that was read (a lone int stays an int).
func (r Resolutions) MarshalYAML() (any, error) {
	if r.scalar && len(r.Values) == 1 {
		return r.Values[0], nil
	}
	if r.Values == nil {
		return []int{}, nil
	}
	return r.Values, nil
}

// Ptr returns a pointer to v, for the optional fields.
func Ptr[T any](v T) *T { return &v }

func val[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// ReadFile reads a config as run.py would find it by path, choosing the
// format by extension.
func ReadFile(path string, opts ParseOptions) (*Config, error) {
	f, err := FormatOf(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data, f, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads a job config the way toolkit/config.py get_config does: the
// text must be UTF-8; with opts.Expand, ${VAR} placeholders are replaced
// first; then JSON (json.loads) or YAML (PyYAML SafeLoader, where a later
// duplicate key wins). The structure checks run.py makes (job, config,
// config.name, process types) are left to Validate so that they come back
// as Problems with field paths.
func Parse(data []byte, f Format, opts ParseOptions) (*Config, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("config is not valid UTF-8 (ai-toolkit reads it as UTF-8)")
	}
	text := string(data)
	if opts.Expand {
		var err error
		if text, err = ExpandEnv(text, opts.Env); err != nil {
			return nil, err
		}
	}
	var root *yaml.Node
	var docHead string
	switch f {
	case JSON:
		n, err := jsonToNode(text)
		if err != nil {
			return nil, fmt.Errorf("json: %w", err)
		}
		root = n
	case YAML:
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			return nil, fmt.Errorf("yaml: %w", err)
		}
		if doc.Kind == 0 || len(doc.Content) == 0 {
			return nil, errors.New("config is empty")
		}
		root = doc.Content[0]
		docHead = doc.HeadComment
	default:
		return nil, fmt.Errorf("unknown config format %q", f)
	}
	root, err := resolveAliases(root)
	if err != nil {
		return nil, err
	}
	if root.Kind != yaml.MappingNode {
		return nil, errors.New("config must be a mapping (job:, config:, …)")
	}
	dedupe(root)
	if opts.Expand {
		name := opts.Name
		if name == "" {
			if n := lookup(root, "config", "name"); n != nil && n.Kind == yaml.ScalarNode {
				name = n.Value
			}
		}
		if name != "" {
			replaceName(root, name)
		}
	}
	c := &Config{}
	if err := root.Decode(c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.doc, c.docHead = root, docHead
	if !opts.Expand {
		c.Placeholders = Placeholders(text)
	}
	return c, nil
}

// ExpandEnv replaces ${VAR} in text from env (nil: os.LookupEnv) exactly as
// toolkit/config.py replace_env_vars_in_string: one pass over the whole text,
// comments included, anything but "}" allowed in the name, substituted values
// not rescanned, and an unset variable an error.
func ExpandEnv(text string, env func(string) (string, bool)) (string, error) {
	if env == nil {
		env = os.LookupEnv
	}
	var missing error
	out := envRef.ReplaceAllStringFunc(text, func(m string) string {
		name := m[2 : len(m)-1]
		v, ok := env(name)
		if !ok && missing == nil {
			missing = fmt.Errorf("%w: %s (the config refers to ${%s})", ErrEnvUnset, name, name)
		}
		return v
	})
	if missing != nil {
		return "", missing
	}
	return out, nil
}

// Placeholders returns the ${VAR} names in text in order of first use.
func Placeholders(text string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range envRef.FindAllStringSubmatch(text, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	return out
}

// ArchBase is the arch as ModelConfig reads it: anything after ":" is
// dropped ("wan21:14b" is "wan21") and "flex1" means "flux".
func ArchBase(arch string) string {
	if i := strings.IndexByte(arch, ':'); i >= 0 {
		arch = arch[:i]
	}
	if arch == "flex1" {
		return "flux"
	}
	return arch
}

// Marshal writes the config in format f. A parsed config keeps its key order,
// comments (YAML) and every key it had; fields changed through the typed view
// are written over the originals, removed ones (nil) are dropped.
func (c *Config) Marshal(f Format) ([]byte, error) {
	n, err := c.node()
	if err != nil {
		return nil, err
	}
	switch f {
	case YAML:
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}}
		if c.doc != nil {
			doc.HeadComment = c.docHead
		}
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case JSON:
		var buf bytes.Buffer
		if err := writeJSON(&buf, n, ""); err != nil {
			return nil, err
		}
		buf.WriteByte('\n')
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("unknown config format %q", f)
}

// MarshalJSON writes the config as ai-toolkit JSON (the form the UI stores in
// .job_config.json), with every kept key.
func (c *Config) MarshalJSON() ([]byte, error) { return c.Marshal(JSON) }

// Clone returns a deep copy whose edits do not touch c.
func (c *Config) Clone() (*Config, error) {
	n, err := c.node()
	if err != nil {
		return nil, err
	}
	d := &Config{}
	if err := n.Decode(d); err != nil {
		return nil, err
	}
	d.doc = n
	d.docHead = c.docHead
	d.Placeholders = slices.Clone(c.Placeholders)
	d.Env = maps.Clone(c.Env)
	d.Notes = slices.Clone(c.Notes)
	return d, nil
}

// node returns the document to write: the typed view encoded and merged into
// the parsed document.
func (c *Config) node() (*yaml.Node, error) {
	var fresh yaml.Node
	if err := fresh.Encode(c); err != nil {
		return nil, err
	}
	if c.doc == nil {
		return &fresh, nil
	}
	return merge(deepCopy(c.doc), &fresh), nil
}

// lookup walks mapping keys from n.
func lookup(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}
