// Package dataset checks a LoRA training folder the way ai-toolkit (ostris,
// 0.12.26) will read it, before anyone pays for a GPU: which files it takes and
// skips, every clip's frame count, rate and duration from its container, the
// frames ai-toolkit samples and Wan's VAE drops, the bucket each item lands in,
// captions and trigger words, duplicates and damaged media, the epochs the step
// budget buys and the disk the latent cache needs.
//
// Check is the one entry point; it takes typed Options (ai-toolkit's defaults
// from DefaultOptions) and returns a typed Report that the CLI renders and an
// HTTP API can serve as it is.
package dataset

import (
	"fmt"
	"strings"
)

// Options are the ai-toolkit settings that decide how a dataset is read. The
// zero value of a number means ai-toolkit's default; start from DefaultOptions
// so the two booleans that default to true are set.
type Options struct {
	// Arch is model.arch ("wan21", "wan21:14b", "wan22_14b", "wan22_5b", …;
	// everything after ':' is dropped, as ai-toolkit does).
	Arch string `json:"arch"`
	// NumFrames is the dataset's num_frames (1: an image dataset, videos ignored).
	NumFrames int `json:"num_frames"`
	// Resolutions is the dataset's resolution list: each value trains a separate
	// copy of the dataset with buckets of at most value² pixels.
	Resolutions []int `json:"resolutions"`
	// ShrinkVideoToFrames samples num_frames evenly over the whole clip (default
	// true); false takes every k-th frame at FPS from a random start.
	ShrinkVideoToFrames bool `json:"shrink_video_to_frames"`
	// AutoFrameCount trains each clip at its own length at FPS, snapped to 4n+1.
	AutoFrameCount bool `json:"auto_frame_count"`
	// TrimAutoFrameCountTail keeps real time under AutoFrameCount (default true).
	TrimAutoFrameCountTail bool `json:"trim_auto_frame_count_tail"`
	// FPS is the dataset fps (ai-toolkit default 24; Wan presets use 16).
	FPS int `json:"fps"`
	// CaptionExt is caption_ext (default ".txt"; a missing dot is added).
	CaptionExt string `json:"caption_ext"`
	// DefaultCaption replaces missing and blank captions when set.
	DefaultCaption string `json:"default_caption,omitempty"`
	// TriggerWord is the dataset trigger_word (or the process one).
	TriggerWord string `json:"trigger_word,omitempty"`
	// UnloadTextEncoder is train.unload_text_encoder: captions are ignored
	// unless CacheTextEmbeddings is also set.
	UnloadTextEncoder   bool `json:"unload_text_encoder"`
	CacheTextEmbeddings bool `json:"cache_text_embeddings"`
	// CacheLatentsToDisk writes one latent file per item and resolution into
	// _latent_cache beside the media.
	CacheLatentsToDisk bool `json:"cache_latents_to_disk"`
	// Steps, BatchSize, GradAccum (train.gradient_accumulation) and NumRepeats
	// (dataset num_repeats) decide the epochs.
	Steps      int `json:"steps"`
	BatchSize  int `json:"batch_size"`
	GradAccum  int `json:"gradient_accumulation"`
	NumRepeats int `json:"num_repeats"`
	// LatentBytes is the size of one latent element: the VAE dtype (model.vae_dtype,
	// else model.dtype, default float16): 2, or 4 for float32.
	LatentBytes int `json:"latent_bytes"`
	// SpeedTolerance is how far a clip's speed-up or slow-down may stray from 1
	// before it is a warning (default 0.10: 10%).
	SpeedTolerance float64 `json:"speed_tolerance"`
	// VideoProbe picks the metadata reader: "auto" (built-in MP4/MOV parser,
	// ffprobe for other containers when on PATH), "builtin" or "ffprobe".
	VideoProbe string `json:"video_probe"`
	// FFprobe is the ffprobe binary (default: "ffprobe" looked up on PATH).
	FFprobe string `json:"-"`
}

// DefaultOptions are ai-toolkit's defaults (toolkit/config_modules.py
// DatasetConfig, TrainConfig, ModelConfig) with arch wan21.
func DefaultOptions() Options {
	return Options{
		Arch:                   "wan21",
		NumFrames:              1,
		Resolutions:            []int{512},
		ShrinkVideoToFrames:    true,
		TrimAutoFrameCountTail: true,
		FPS:                    24,
		CaptionExt:             ".txt",
		Steps:                  1000,
		BatchSize:              1,
		GradAccum:              1,
		NumRepeats:             1,
		LatentBytes:            2,
		SpeedTolerance:         0.10,
		VideoProbe:             "auto",
	}
}

// Arch is what a model family fixes about its data.
type Arch struct {
	Name string `json:"name"`
	// Divisibility is get_bucket_divisibility(): bucket sides are multiples of it.
	Divisibility int `json:"divisibility"`
	// TemporalCompression is the VAE's frame factor: it encodes 1+(T-1)/tc latent frames.
	TemporalCompression int `json:"temporal_compression"`
	// SpatialCompression and LatentChannels size a latent: C × T' × H/s × W/s.
	SpatialCompression int `json:"spatial_compression"`
	LatentChannels     int `json:"latent_channels"`
	// NativeFPS is the rate the model generates at, used to tell how fast motion
	// plays once frames are sampled.
	NativeFPS float64 `json:"native_fps"`
}

var wan21 = Arch{Divisibility: 16, TemporalCompression: 4, SpatialCompression: 8, LatentChannels: 16, NativeFPS: 16}

// arches are the Wan families ai-toolkit trains (toolkit/models/wan21,
// extensions_built_in/diffusion_models/wan22).
var arches = map[string]Arch{
	"wan21":         wan21,
	"wan21_i2v":     wan21,
	"wan22_14b":     wan21,
	"wan22_14b_i2v": wan21,
	"wan22_5b":      {Divisibility: 32, TemporalCompression: 4, SpatialCompression: 16, LatentChannels: 48, NativeFPS: 24},
}

// LookupArch returns the family for a model.arch value.
func LookupArch(name string) (Arch, error) {
	n, _, _ := strings.Cut(strings.TrimSpace(name), ":")
	a, ok := arches[n]
	if !ok {
		return Arch{}, fmt.Errorf("arch %q: scopectl checks Wan datasets (wan21, wan21_i2v, wan22_14b, wan22_14b_i2v, wan22_5b)", name)
	}
	a.Name = n
	return a, nil
}

// normalized fills zero fields with ai-toolkit's defaults and checks the rest.
func (o Options) normalized() (Options, Arch, error) {
	d := DefaultOptions()
	if o.Arch == "" {
		o.Arch = d.Arch
	}
	a, err := LookupArch(o.Arch)
	if err != nil {
		return o, a, err
	}
	o.Arch = a.Name
	if o.NumFrames == 0 {
		o.NumFrames = d.NumFrames
	}
	if len(o.Resolutions) == 0 {
		o.Resolutions = d.Resolutions
	}
	if o.FPS == 0 {
		o.FPS = d.FPS
	}
	if o.CaptionExt == "" {
		o.CaptionExt = d.CaptionExt
	}
	if !strings.HasPrefix(o.CaptionExt, ".") {
		o.CaptionExt = "." + o.CaptionExt
	}
	for _, p := range []struct {
		v   *int
		def int
	}{{&o.Steps, d.Steps}, {&o.BatchSize, d.BatchSize}, {&o.GradAccum, d.GradAccum}, {&o.NumRepeats, d.NumRepeats}, {&o.LatentBytes, d.LatentBytes}} {
		if *p.v == 0 {
			*p.v = p.def
		}
	}
	if o.SpeedTolerance == 0 {
		o.SpeedTolerance = d.SpeedTolerance
	}
	if o.VideoProbe == "" {
		o.VideoProbe = d.VideoProbe
	}
	switch {
	case o.NumFrames < 1:
		return o, a, fmt.Errorf("num_frames %d: must be at least 1", o.NumFrames)
	case o.FPS < 0:
		return o, a, fmt.Errorf("fps %d: must be positive", o.FPS)
	case o.Steps < 0 || o.BatchSize < 0 || o.GradAccum < 0 || o.NumRepeats < 0 || o.LatentBytes < 0:
		return o, a, fmt.Errorf("steps, batch size, gradient accumulation, repeats and latent bytes must be positive")
	case o.VideoProbe != "auto" && o.VideoProbe != "builtin" && o.VideoProbe != "ffprobe":
		return o, a, fmt.Errorf("video probe %q: want auto, builtin or ffprobe", o.VideoProbe)
	}
	for _, r := range o.Resolutions {
		if r <= 0 {
			return o, a, fmt.Errorf("resolution %d: must be positive", r)
		}
	}
	return o, a, nil
}

// IsVideo is ai-toolkit's is_video: num_frames > 1 or auto_frame_count.
func (o Options) IsVideo() bool { return o.NumFrames > 1 || o.AutoFrameCount }

// ai-toolkit's extension lists (toolkit/data_loader.py).
var (
	imageExts = []string{".jpg", ".jpeg", ".png", ".webp"}
	videoExts = []string{".mp4", ".avi", ".mov", ".webm", ".mkv", ".wmv", ".m4v", ".flv"}
	// otherMedia are media files ai-toolkit never reads; listing them as skipped
	// tells the user why a clip they meant to include is missing.
	otherMedia = []string{".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl",
		".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".3gp", ".ogv", ".vob", ".mxf",
		".mp3", ".wav", ".flac", ".aac", ".ogg", ".m4a"}
)

func hasExt(name string, exts []string) bool {
	l := strings.ToLower(name)
	for _, e := range exts {
		if strings.HasSuffix(l, e) {
			return true
		}
	}
	return false
}

func itoa(i int) string { return fmt.Sprint(i) }
