package dataset

// Severity ranks a finding.
type Severity string

const (
	Error   Severity = "error"   // ai-toolkit fails, or skips the item
	Warning Severity = "warning" // trains, but maybe not as meant
	Info    Severity = "info"    // worth knowing
)

// Finding codes. Codes whose Changes is true (see changesTraining) mark a
// warning that silently changes what is trained; Report.Fails counts them.
const (
	CodeNoItems          = "no_items"            // error: ai-toolkit asserts "no videos/images found"
	CodeUnreadable       = "unreadable"          // error: the file cannot be opened
	CodeEmptyFile        = "empty_file"          // error: zero bytes
	CodeCorrupt          = "corrupt"             // error: the media does not parse or decode; ai-toolkit skips it
	CodeNoFrames         = "no_frames"           // error: the container reports 0 frames
	CodeZeroFPS          = "zero_fps"            // error with auto_frame_count (division by zero, clip skipped); info otherwise
	CodeBadCaption       = "caption_unreadable"  // error: not UTF-8 or unreadable: the data loader raises
	CodeFramesDropped    = "frames_dropped"      // warning*: num_frames not 4n+1, the VAE drops the tail
	CodeFramesRepeated   = "frames_repeated"     // warning*: the clip is shorter than num_frames, frames repeat
	CodeSpeedChanged     = "speed_changed"       // warning*: motion sped up or slowed down past SpeedTolerance
	CodeCaptionMissing   = "caption_missing"     // warning*: no caption file: trains on "" (or default_caption: info)
	CodeCaptionEmpty     = "caption_empty"       // warning*: blank caption file
	CodeCaptionBOM       = "caption_bom"         // warning*: a UTF-8 byte order mark becomes part of the caption
	CodeCaptionsIgnored  = "captions_ignored"    // warning*: unload_text_encoder trains on the trigger word or a blank prompt only
	CodeTriggerRemoved   = "trigger_placeholder" // warning*: [trigger]/[name] with no trigger word is deleted
	CodeAnimatedStill    = "animated_image"      // warning*: an animated WebP/PNG trains as its first frame
	CodeDuplicate        = "duplicate"           // warning*: same bytes as another item: it trains twice as often
	CodeVideosIgnored    = "videos_ignored"      // warning*: num_frames 1: an image dataset ignores the videos
	CodeUnprobed         = "video_unprobed"      // warning: no reader for this container (install ffprobe)
	CodeFewSteps         = "under_one_epoch"     // warning: the steps do not reach every item once
	CodeTriggerAdded     = "trigger_added"       // info: the trigger word is prepended
	CodeSkipped          = "skipped"             // info: a file ai-toolkit does not read, and why
	CodeImageInVideo     = "image_in_video"      // info: an image in a video dataset trains as one frame
	CodeRandomWindow     = "random_window"       // info: shrink_video_to_frames false: a random window each epoch
	CodeBelowResolution  = "below_resolution"    // info: smaller than resolution²: trains at its own size
	CodeUpscaled         = "upscaled"            // info: rounding the bucket up enlarges the media a little
	CodeRotated          = "rotated"             // info: rotation metadata: trained upright, sides swapped
	CodeAV1              = "av1"                 // info: OpenCV cannot decode AV1; ai-toolkit falls back to PyAV
	CodeExtMismatch      = "extension_mismatch"  // info: content is another format than the extension says
	CodeOrphanCaption    = "orphan_caption"      // info: a caption file with no media
	CodeLatentCache      = "latent_cache"        // info: disk the latent cache will need
	CodeFramesSummary    = "frames"              // info: per-dataset frame plan
	CodeSymlinkDir       = "symlink_dir"         // info: os.walk does not follow symlinked folders
	CodeHiddenDir        = "hidden_dir"          // info: a hidden folder is pruned
	CodeNotWritable      = "not_writable"        // info: ai-toolkit writes .aitk_size.json and caches into the folder
	CodeDefaultCaption   = "default_caption"     // info: a missing/blank caption becomes default_caption
	CodeMixedFrameCounts = "mixed_frame_counts"  // info: auto_frame_count puts clips of different lengths in different buckets
)

// changesTraining lists the warning codes that silently change training:
// ai-toolkit runs without a word, but on different frames, speeds, captions or
// weights than the folder suggests. Report.Fails is true when one is present.
var changesTraining = map[string]bool{
	CodeFramesDropped: true, CodeFramesRepeated: true, CodeSpeedChanged: true,
	CodeCaptionMissing: true, CodeCaptionEmpty: true, CodeCaptionBOM: true,
	CodeCaptionsIgnored: true, CodeTriggerRemoved: true, CodeAnimatedStill: true,
	CodeDuplicate: true, CodeVideosIgnored: true,
}

// Finding is one observation about an item or the whole dataset.
type Finding struct {
	Code     string   `json:"code"`
	Severity Severity `json:"severity"`
	// Changes is true for a warning that silently changes training.
	Changes bool   `json:"changes_training,omitempty"`
	Message string `json:"message"`
}

// Kind is what ai-toolkit makes of a file.
type Kind string

const (
	KindVideo   Kind = "video"
	KindImage   Kind = "image"
	KindSkipped Kind = "skipped" // never read by ai-toolkit
)

// Caption is an item's caption as ai-toolkit will use it.
type Caption struct {
	Path   string `json:"path"`   // the caption file looked for, relative to the dataset
	Status string `json:"status"` // ok, missing, empty, unreadable
	// Text is the caption after ai-toolkit's processing (default_caption,
	// comma re-join, [trigger] substitution, trigger prepended), without the
	// random parts (dropout, shuffling).
	Text       string `json:"text,omitempty"`
	HasTrigger bool   `json:"has_trigger,omitempty"` // the raw caption holds the trigger word or [trigger]
	Ignored    bool   `json:"ignored,omitempty"`     // unload_text_encoder: the text never reaches the model
}

// Item is one media file.
type Item struct {
	Path   string `json:"path"` // relative to the dataset folder, slash-separated
	Kind   Kind   `json:"kind"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	Format string `json:"format,omitempty"` // image format or video codec
	// Source says where the numbers come from: "mp4" (built-in container
	// parser), "ffprobe", or "image".
	Source   string     `json:"source,omitempty"`
	Width    int        `json:"width,omitempty"`
	Height   int        `json:"height,omitempty"`
	Frames   int        `json:"frames,omitempty"`
	FPS      float64    `json:"fps,omitempty"`
	Duration float64    `json:"duration,omitempty"` // seconds
	Plan     *FramePlan `json:"frame_plan,omitempty"`
	Buckets  []Bucket   `json:"buckets,omitempty"` // one per resolution
	Caption  *Caption   `json:"caption,omitempty"`
	Findings []Finding  `json:"findings,omitempty"`
	trains   bool       // ai-toolkit keeps it
}

// BucketCount is one bucket of one resolution's dataset copy.
type BucketCount struct {
	Resolution int    `json:"resolution"`
	Key        string `json:"key"`     // ai-toolkit's "WxH" or "WxHxNf"
	Items      int    `json:"items"`   // with num_repeats
	Batches    int    `json:"batches"` // ceil(items / batch size): a short last batch is padded with repeats
}

// Totals sum the report.
type Totals struct {
	Files    int `json:"files"` // media files seen (trained or skipped)
	Videos   int `json:"videos"`
	Images   int `json:"images"`
	Skipped  int `json:"skipped"`
	Trained  int `json:"trained"` // items ai-toolkit keeps (before repeats and resolutions)
	Errors   int `json:"errors"`
	Warnings int `json:"warnings"`
	Infos    int `json:"infos"`
	// Duplicates counts items whose bytes equal an earlier item's.
	Duplicates int `json:"duplicates"`
	// VideoSeconds is the summed duration of trained clips.
	VideoSeconds float64       `json:"video_seconds"`
	Buckets      []BucketCount `json:"buckets,omitempty"`
	// BatchesPerEpoch is the data loader's length over all resolutions;
	// Epochs = Steps × GradAccum / BatchesPerEpoch.
	BatchesPerEpoch int     `json:"batches_per_epoch"`
	Epochs          float64 `json:"epochs"`
	// LatentCacheFiles and LatentCacheBytes estimate _latent_cache when
	// cache_latents_to_disk is on (see EstimateLatentBytes).
	LatentCacheFiles int   `json:"latent_cache_files,omitempty"`
	LatentCacheBytes int64 `json:"latent_cache_bytes,omitempty"`
}

// Report is the result of Check.
type Report struct {
	Dir     string  `json:"dir"`
	Options Options `json:"options"`
	Arch    Arch    `json:"arch"`
	// VideoProbe names the metadata readers used: "mp4" (built-in), "ffprobe".
	VideoProbe []string  `json:"video_probe,omitempty"`
	Items      []Item    `json:"items"`
	Findings   []Finding `json:"findings,omitempty"` // about the dataset as a whole
	Totals     Totals    `json:"totals"`
	// Fail is Fails(): an error, or a warning that silently changes training.
	Fail bool `json:"fail"`
}

// Fails is true when training would fail, skip an item, or silently train on
// something other than the folder suggests (an error, or a warning whose code
// is in the changes-training class).
func (r *Report) Fails() bool {
	check := func(fs []Finding) bool {
		for _, f := range fs {
			if f.Severity == Error || (f.Severity == Warning && f.Changes) {
				return true
			}
		}
		return false
	}
	if check(r.Findings) {
		return true
	}
	for _, it := range r.Items {
		if check(it.Findings) {
			return true
		}
	}
	return false
}

func finding(code string, sev Severity, format string, a ...any) Finding {
	return Finding{Code: code, Severity: sev, Changes: sev == Warning && changesTraining[code], Message: sprintf(format, a...)}
}
