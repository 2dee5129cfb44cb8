package dataset

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

var sprintf = fmt.Sprintf

// maxImageBytes caps how much of one image is read to decode it.
const maxImageBytes = 512 << 20

// Check reads every file under dir as ai-toolkit will and reports on each item
// and on the whole. The error is only for a folder or options that cannot be
// checked at all; everything about the media is in the Report.
func Check(ctx context.Context, dir string, opts Options) (*Report, error) {
	o, arch, err := opts.normalized()
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: not a folder (a JSON dataset_path is not supported yet)", dir)
	}
	c := &checker{ctx: ctx, dir: dir, o: o, arch: arch, rep: &Report{Dir: dir, Options: o, Arch: arch}}
	if o.VideoProbe != "builtin" {
		bin := o.FFprobe
		if bin == "" {
			bin = "ffprobe"
		}
		if p, err := exec.LookPath(bin); err == nil {
			c.ffprobe = p
		} else if o.VideoProbe == "ffprobe" {
			return nil, fmt.Errorf("video probe ffprobe: %w", err)
		}
	}
	if err := c.walk(); err != nil {
		return nil, err
	}
	c.summarize()
	return c.rep, nil
}

type checker struct {
	ctx      context.Context
	dir      string
	o        Options
	arch     Arch
	rep      *Report
	ffprobe  string
	used     map[string]bool // probe sources used
	captions map[string]bool // caption files claimed by media
	allCapts []string
	ignored  int // videos an image dataset does not read
}

func (c *checker) dataset(f Finding) { c.rep.Findings = append(c.rep.Findings, f) }

// walk is os.walk as AiToolkitDataset does it: recursive, hidden folders
// pruned, hidden files and files directly inside a "_controls" folder dropped,
// extensions matched case-insensitively, symlinked folders not followed.
func (c *checker) walk() error {
	c.used = map[string]bool{}
	c.captions = map[string]bool{}
	video := c.o.IsVideo()
	var files []string
	err := filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == c.dir {
				return err
			}
			c.dataset(finding(CodeUnreadable, Error, "%s: %v (ai-toolkit's os.walk skips it silently)", c.rel(path), err))
			return nil
		}
		if cerr := c.ctx.Err(); cerr != nil {
			return cerr
		}
		name := d.Name()
		if d.IsDir() {
			if path != c.dir && strings.HasPrefix(name, ".") {
				c.dataset(finding(CodeHiddenDir, Info, "%s/: hidden folder, not read", c.rel(path)))
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if st, err := os.Stat(path); err == nil && st.IsDir() {
				c.dataset(finding(CodeSymlinkDir, Info, "%s: symlinked folder, not followed by os.walk", c.rel(path)))
				return nil
			}
		}
		if strings.HasSuffix(strings.ToLower(name), strings.ToLower(c.o.CaptionExt)) && !hasExt(name, imageExts) && !hasExt(name, videoExts) {
			c.allCapts = append(c.allCapts, path)
		}
		files = append(files, path)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, path := range files {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		name := filepath.Base(path)
		isImg, isVid := hasExt(name, imageExts), hasExt(name, videoExts)
		media := isImg || isVid || hasExt(name, otherMedia)
		if !media {
			continue
		}
		it := Item{Path: c.rel(path), Kind: KindSkipped}
		switch {
		case strings.HasPrefix(name, "."):
			it.Findings = append(it.Findings, finding(CodeSkipped, Info, "hidden file: not read"))
		case filepath.Base(filepath.Dir(path)) == "_controls":
			it.Findings = append(it.Findings, finding(CodeSkipped, Info, "inside a _controls folder: control images are not training items"))
		case isVid && !video:
			c.ignored++
			it.Findings = append(it.Findings, finding(CodeSkipped, Info, "video in an image dataset (num_frames 1): not read"))
		case !isImg && !isVid:
			it.Findings = append(it.Findings, finding(CodeSkipped, Info, "ai-toolkit reads %s and %s only", strings.Join(imageExts, " "), strings.Join(videoExts, " ")))
		case isVid:
			it.Kind = KindVideo
		default:
			it.Kind = KindImage
		}
		if it.Kind != KindSkipped {
			c.item(path, &it)
		}
		c.rep.Items = append(c.rep.Items, it)
	}
	for _, p := range c.allCapts {
		if !c.captions[p] {
			c.dataset(finding(CodeOrphanCaption, Info, "%s: caption without media", c.rel(p)))
		}
	}
	return nil
}

func (c *checker) rel(path string) string {
	r, err := filepath.Rel(c.dir, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(r)
}

// item probes one media file ai-toolkit will read.
func (c *checker) item(path string, it *Item) {
	add := func(f Finding) { it.Findings = append(it.Findings, f) }
	it.Caption = c.caption(path)
	if it.Caption != nil {
		it.Findings = append(it.Findings, c.captionFindings(it.Caption)...)
	}
	f, err := os.Open(path)
	if err != nil {
		add(finding(CodeUnreadable, Error, "%v: ai-toolkit skips it", errors.Unwrap(err)))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		add(finding(CodeUnreadable, Error, "%v", err))
		return
	}
	it.Size = st.Size()
	if it.Size == 0 {
		add(finding(CodeEmptyFile, Error, "zero-length file: ai-toolkit cannot open it and skips it"))
		return
	}
	if it.Kind == KindImage {
		c.image(f, it)
	} else {
		c.video(f, path, it)
	}
}

func (c *checker) image(f *os.File, it *Item) {
	add := func(fd Finding) { it.Findings = append(it.Findings, fd) }
	h := sha256.New()
	data, err := io.ReadAll(io.TeeReader(io.LimitReader(f, maxImageBytes), h))
	if err != nil {
		add(finding(CodeUnreadable, Error, "read: %v", err))
		return
	}
	it.SHA256 = hex.EncodeToString(h.Sum(nil))
	it.Source = "image"
	info, err := ProbeImage(data)
	it.Format = info.Format
	if err != nil {
		add(finding(CodeCorrupt, Error, "%v: ai-toolkit fails to open it and skips it", err))
		return
	}
	it.Width, it.Height = info.Width, info.Height
	if ext := strings.TrimPrefix(strings.ToLower(filepath.Ext(it.Path)), "."); ext != info.Format && !(ext == "jpg" && info.Format == "jpeg") {
		add(finding(CodeExtMismatch, Info, "named .%s but holds %s: PIL reads it by content", ext, info.Format))
	}
	if info.Orientation >= 5 {
		add(finding(CodeRotated, Info, "EXIF orientation %d: trained upright as %dx%d", info.Orientation, it.Width, it.Height))
	}
	if info.Animated {
		add(finding(CodeAnimatedStill, Warning, "animated %s (%d frames): ai-toolkit reads images with PIL and trains the first frame only; convert it to a video file to train the motion", info.Format, info.Frames))
	}
	if c.o.IsVideo() {
		add(finding(CodeImageInVideo, Info, "image in a video dataset: trains as a single frame in its own bucket"))
	}
	it.trains = true
	c.buckets(it, 1)
}

func (c *checker) video(f *os.File, path string, it *Item) {
	add := func(fd Finding) { it.Findings = append(it.Findings, fd) }
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		add(finding(CodeUnreadable, Error, "read: %v", err))
		return
	}
	it.SHA256 = hex.EncodeToString(h.Sum(nil))
	var head [12]byte
	n, _ := f.ReadAt(head[:], 0)
	isoBMFF := n >= 8 && isISOBMFF(head[:n])
	var (
		info VideoInfo
		err  error
	)
	switch {
	case c.o.VideoProbe == "ffprobe" || (!isoBMFF && c.ffprobe != ""):
		it.Source = "ffprobe"
		info, err = probeFFprobe(c.ctx, c.ffprobe, path)
	case isoBMFF:
		it.Source = "mp4"
		info, err = ProbeMP4(f, it.Size)
	default:
		add(finding(CodeUnprobed, Warning, "%s container: the built-in reader handles MP4/MOV/M4V only; install ffprobe to check its frames", strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")))
		it.trains = true // ai-toolkit may well read it; we cannot tell its bucket
		return
	}
	c.used[it.Source] = true
	it.Format = info.Codec
	it.Width, it.Height, it.Frames, it.FPS, it.Duration = info.Width, info.Height, info.Frames, info.FPS, info.Duration
	if err != nil {
		add(finding(CodeCorrupt, Error, "%v: OpenCV cannot read it whole; ai-toolkit skips it or fails mid-training", err))
		return
	}
	if info.Width <= 0 || info.Height <= 0 {
		add(finding(CodeCorrupt, Error, "no frame size in the container"))
		return
	}
	if info.Codec == "av01" || info.Codec == "av1" {
		add(finding(CodeAV1, Info, "AV1: OpenCV's FFmpeg cannot decode it; ai-toolkit falls back to PyAV (slower)"))
	}
	if info.Rotation == 90 || info.Rotation == 270 {
		add(finding(CodeRotated, Info, "rotated %d°: OpenCV turns it upright, %dx%d", info.Rotation, it.Width, it.Height))
	}
	if info.FPS <= 0 && !c.o.AutoFrameCount {
		add(finding(CodeZeroFPS, Info, "no frame rate in the container: speed cannot be checked"))
	}
	plan, err := PlanFrames(info.Frames, info.FPS, c.o, c.arch)
	if err != nil {
		code := CodeNoFrames
		if errors.Is(err, errZeroFPS) {
			code = CodeZeroFPS
		}
		add(finding(code, Error, "%v", err))
		return
	}
	it.Plan = &plan
	if plan.Repeated > 0 {
		add(finding(CodeFramesRepeated, Warning, "%d frames, %d asked for: %d frames are repeats (slow motion)", info.Frames, plan.NumFrames, plan.Repeated))
	}
	if plan.Speed > 0 && (plan.Speed > 1+c.o.SpeedTolerance || plan.Speed < 1-c.o.SpeedTolerance) {
		how := "sped up"
		if plan.Speed < 1 {
			how = "slowed down"
		}
		add(finding(CodeSpeedChanged, Warning, "motion %s %.2f×: %.2fs of clip become %.2fs at %g fps (%s sampling); trim clips to %.2fs or set num_frames to match",
			how, plan.Speed, plan.SourceSeconds, plan.TrainedSeconds, c.arch.NativeFPS, plan.Mode, float64(plan.NumFrames)/c.arch.NativeFPS))
	}
	if plan.Mode == "window" {
		add(finding(CodeRandomWindow, Info, "shrink_video_to_frames is off: each epoch reads %d frames from a random start", plan.NumFrames))
	}
	it.trains = true
	c.buckets(it, plan.NumFrames)
}

func isISOBMFF(b []byte) bool {
	switch string(b[4:8]) {
	case "ftyp", "moov", "mdat", "free", "skip", "wide", "pnot", "styp":
		return true
	}
	return false
}

func (c *checker) buckets(it *Item, frames int) {
	for _, r := range c.o.Resolutions {
		b := bucketFor(it.Width, it.Height, r, c.arch.Divisibility, frames)
		it.Buckets = append(it.Buckets, b)
	}
	if len(it.Buckets) == 0 {
		return
	}
	b := it.Buckets[len(it.Buckets)-1] // the largest resolution listed last is the usual case
	for _, bb := range it.Buckets {
		if bb.Resolution > b.Resolution {
			b = bb
		}
	}
	// ai-toolkit never scales media up to the resolution: a small source trains
	// small. Rounding alone (832x480 at 632) is not worth a line.
	if it.Width*it.Height < b.Resolution*b.Resolution && float64(b.Width*b.Height) < 0.9*float64(b.Resolution*b.Resolution) {
		it.Findings = append(it.Findings, finding(CodeBelowResolution, Info, "%dx%d is below resolution %d: trains at %dx%d (%.0f%% of %d² pixels), never upscaled",
			it.Width, it.Height, b.Resolution, b.Width, b.Height, 100*float64(b.Width*b.Height)/float64(b.Resolution*b.Resolution), b.Resolution))
	}
	for _, bb := range it.Buckets {
		if bb.Scale > 1.0001 {
			it.Findings = append(it.Findings, finding(CodeUpscaled, Info, "resolution %d: bucket %dx%d enlarges it %.1f%% (rounding to multiples of %d)", bb.Resolution, bb.Width, bb.Height, (bb.Scale-1)*100, c.arch.Divisibility))
		}
	}
}

// caption finds and reads the caption ai-toolkit pairs with a media file:
// splitext(path)[0] + caption_ext (CaptionProcessingDTOMixin.load_caption).
func (c *checker) caption(path string) *Caption {
	cp := strings.TrimSuffix(path, filepath.Ext(path)) + c.o.CaptionExt
	c.captions[cp] = true
	cap := &Caption{Path: c.rel(cp), Ignored: c.o.UnloadTextEncoder && !c.o.CacheTextEmbeddings}
	raw, err := os.ReadFile(cp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		cap.Status = "missing"
	case err != nil:
		cap.Status = "unreadable"
		return cap
	case !utf8.Valid(raw):
		cap.Status = "unreadable"
		return cap
	case strings.TrimSpace(string(raw)) == "":
		cap.Status = "empty"
	default:
		cap.Status = "ok"
	}
	text := string(raw)
	if cap.Status != "ok" && c.o.DefaultCaption != "" {
		text = c.o.DefaultCaption
	}
	trig := c.o.TriggerWord
	cap.HasTrigger = strings.Contains(text, "[trigger]") || strings.Contains(text, "[name]") || (trig != "" && strings.Contains(text, trig))
	cap.Text = captionText(text, trig)
	return cap
}

// captionText is get_caption without the random parts: split on commas and
// re-join with ", ", then inject_trigger_into_prompt (replace [name] and
// [trigger], prepend the trigger word when absent).
func captionText(raw, trigger string) string {
	s := strings.Join(strings.Split(raw, ","), ", ")
	s = strings.ReplaceAll(strings.ReplaceAll(s, "[name]", trigger), "[trigger]", trigger)
	if strings.TrimSpace(trigger) != "" && !strings.Contains(s, trigger) {
		s = trigger + " " + s
	}
	return s
}

func (c *checker) captionFindings(cap *Caption) []Finding {
	var out []Finding
	if cap.Status == "unreadable" {
		return []Finding{finding(CodeBadCaption, Error, "%s is not readable UTF-8: ai-toolkit's data loader raises on it", cap.Path)}
	}
	if cap.Ignored {
		return nil // reported once for the dataset
	}
	raw, _ := os.ReadFile(filepath.Join(c.dir, filepath.FromSlash(cap.Path)))
	if bytes.HasPrefix(raw, []byte("\xef\xbb\xbf")) {
		out = append(out, finding(CodeCaptionBOM, Warning, "%s starts with a byte order mark: Python reads it as part of the caption", cap.Path))
	}
	switch {
	case cap.Status != "ok" && c.o.DefaultCaption != "":
		out = append(out, finding(CodeDefaultCaption, Info, "%s %s: default_caption is used", cap.Path, cap.Status))
	case cap.Status == "missing":
		out = append(out, finding(CodeCaptionMissing, Warning, "no %s: ai-toolkit trains it with an empty caption%s, without a word", cap.Path, trigSuffix(c.o.TriggerWord)))
	case cap.Status == "empty":
		out = append(out, finding(CodeCaptionEmpty, Warning, "%s is blank: ai-toolkit trains it with an empty caption%s", cap.Path, trigSuffix(c.o.TriggerWord)))
	}
	t := c.o.TriggerWord
	if cap.Status == "ok" {
		raw := string(raw)
		switch {
		case t == "" && (strings.Contains(raw, "[trigger]") || strings.Contains(raw, "[name]")):
			out = append(out, finding(CodeTriggerRemoved, Warning, "caption uses [trigger] but no trigger word is set: the placeholder is deleted"))
		case t != "" && !cap.HasTrigger:
			out = append(out, finding(CodeTriggerAdded, Info, "trigger word %q not in the caption: ai-toolkit prepends it", t))
		}
	}
	return out
}

func trigSuffix(t string) string {
	if t == "" {
		return ""
	}
	return fmt.Sprintf(" (plus the trigger word %q)", t)
}

// summarize adds dataset-level findings and totals.
func (c *checker) summarize() {
	r, o := c.rep, c.o
	video := o.IsVideo()
	for s := range c.used {
		r.VideoProbe = append(r.VideoProbe, s)
	}
	slices.Sort(r.VideoProbe)
	// duplicates by content
	first := map[string]string{}
	for i := range r.Items {
		it := &r.Items[i]
		if !it.trains || it.SHA256 == "" {
			continue
		}
		if p, ok := first[it.SHA256]; ok {
			it.Findings = append(it.Findings, finding(CodeDuplicate, Warning, "same bytes as %s: it trains twice as often", p))
			r.Totals.Duplicates++
			continue
		}
		first[it.SHA256] = it.Path
	}
	t := &r.Totals
	frameCounts := map[int]int{}
	bucketItems := map[[2]string]*BucketCount{}
	var bucketOrder [][2]string
	captionsWithText := 0
	for i := range r.Items {
		it := &r.Items[i]
		t.Files++
		switch it.Kind {
		case KindSkipped:
			t.Skipped++
		case KindVideo:
			t.Videos++
		case KindImage:
			t.Images++
		}
		if it.Caption != nil && it.Caption.Status == "ok" {
			captionsWithText++
		}
		if it.trains && !hasError(it.Findings) {
			t.Trained++
			if it.Plan != nil {
				frameCounts[it.Plan.NumFrames]++
				t.VideoSeconds += it.Duration
			}
			for _, b := range it.Buckets {
				k := [2]string{itoa(b.Resolution), b.Key(video)}
				bc, ok := bucketItems[k]
				if !ok {
					bc = &BucketCount{Resolution: b.Resolution, Key: b.Key(video)}
					bucketItems[k] = bc
					bucketOrder = append(bucketOrder, k)
				}
				bc.Items += o.NumRepeats
				if o.CacheLatentsToDisk {
					t.LatentCacheFiles++
					t.LatentCacheBytes += EstimateLatentBytes(b, c.arch, o.LatentBytes, it.Kind == KindVideo)
				}
			}
		}
	}
	if c.ignored > 0 {
		c.dataset(finding(CodeVideosIgnored, Warning, "%d video(s) ignored: num_frames is 1, so ai-toolkit reads images only; set num_frames (e.g. 81) or auto_frame_count", c.ignored))
	}
	if t.Trained == 0 {
		kind := "images"
		if video {
			kind = "videos"
		}
		c.dataset(finding(CodeNoItems, Error, "no trainable %s: ai-toolkit stops with \"no %s found in %s\"", kind, kind, r.Dir))
	}
	if video && !o.AutoFrameCount && t.Videos > 0 {
		tc := c.arch.TemporalCompression
		if (o.NumFrames-1)%tc != 0 {
			used := 1 + (o.NumFrames-1)/tc*tc
			c.dataset(finding(CodeFramesDropped, Warning, "num_frames %d is not %dn+1: Wan's VAE encodes %d and silently drops the last %d of every clip; use %d or %d",
				o.NumFrames, tc, used, o.NumFrames-used, used, used+tc))
		}
	}
	if len(frameCounts) > 1 {
		c.dataset(finding(CodeMixedFrameCounts, Info, "clips train at %d different frame counts: each count is its own bucket", len(frameCounts)))
	}
	if o.UnloadTextEncoder && !o.CacheTextEmbeddings && captionsWithText > 0 {
		what := "a blank prompt"
		if o.TriggerWord != "" {
			what = fmt.Sprintf("the trigger word %q alone", o.TriggerWord)
		}
		c.dataset(finding(CodeCaptionsIgnored, Warning, "unload_text_encoder is on: %d caption(s) are ignored and every item trains with %s; use cache_text_embeddings to keep captions", captionsWithText, what))
	}
	// epochs: the loader's length is the batches of every bucket of every
	// resolution copy; each step takes gradient_accumulation batches.
	for _, k := range bucketOrder {
		bc := bucketItems[k]
		bc.Batches = (bc.Items + o.BatchSize - 1) / o.BatchSize
		t.BatchesPerEpoch += bc.Batches
		t.Buckets = append(t.Buckets, *bc)
	}
	if t.BatchesPerEpoch > 0 {
		t.Epochs = float64(o.Steps) * float64(o.GradAccum) / float64(t.BatchesPerEpoch)
		if t.Epochs < 1 {
			c.dataset(finding(CodeFewSteps, Warning, "%d steps × %d accumulation cover %.0f%% of one epoch (%d batches): some items never train", o.Steps, o.GradAccum, t.Epochs*100, t.BatchesPerEpoch))
		}
	}
	if o.CacheLatentsToDisk && t.LatentCacheFiles > 0 {
		c.dataset(finding(CodeLatentCache, Info, "the latent cache needs about %s in %d file(s) under _latent_cache beside the media", humanBytes(t.LatentCacheBytes), t.LatentCacheFiles))
	}
	if !writable(r.Dir) {
		c.dataset(finding(CodeNotWritable, Info, "the folder is not writable here: ai-toolkit writes .aitk_size.json (and caches) into it"))
	}
	for _, it := range r.Items {
		countSev(t, it.Findings)
	}
	countSev(t, r.Findings)
	r.Fail = r.Fails()
}

func hasError(fs []Finding) bool {
	for _, f := range fs {
		if f.Severity == Error {
			return true
		}
	}
	return false
}

func countSev(t *Totals, fs []Finding) {
	for _, f := range fs {
		switch f.Severity {
		case Error:
			t.Errors++
		case Warning:
			t.Warnings++
		default:
			t.Infos++
		}
	}
}

// EstimateLatentBytes is the size of one cached latent file: Wan's VAE turns
// T frames of H×W into C × (1+(T-1)/tc) × H/s × W/s elements of the VAE dtype
// (16 channels and s=8 for Wan 2.1 and 2.2 14B; 48 and 16 for Wan 2.2 5B),
// saved with safetensors; about 512 bytes of header and metadata (and a
// num_frames scalar for videos) are added. Caches only of items ai-toolkit
// keeps, one per resolution; num_repeats copies share one file.
func EstimateLatentBytes(b Bucket, a Arch, elemBytes int, video bool) int64 {
	tl := int64(1 + (b.Frames-1)/a.TemporalCompression)
	n := int64(a.LatentChannels) * tl * int64(b.Height/a.SpatialCompression) * int64(b.Width/a.SpatialCompression) * int64(elemBytes)
	n += 512
	if video {
		n += 4
	}
	return n
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
