package dataset

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/dataset/mediatest"
)

func write(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func itemByPath(t *testing.T, r *Report, path string) Item {
	t.Helper()
	for _, it := range r.Items {
		if it.Path == path {
			return it
		}
	}
	t.Fatalf("no item %s in %v", path, paths(r))
	return Item{}
}

func paths(r *Report) []string {
	var p []string
	for _, it := range r.Items {
		p = append(p, it.Path)
	}
	return p
}

func codes(fs []Finding) map[string]Finding {
	m := map[string]Finding{}
	for _, f := range fs {
		m[f.Code] = f
	}
	return m
}

func wantCodes(t *testing.T, what string, fs []Finding, want ...string) {
	t.Helper()
	got := codes(fs)
	for _, w := range want {
		if _, ok := got[w]; !ok {
			t.Errorf("%s: no %s finding in %+v", what, w, fs)
		}
	}
}

func TestCheckVideoDataset(t *testing.T) {
	dir := t.TempDir()
	clip := mediatest.MP4{Width: 832, Height: 480, Frames: 81}.Bytes()
	write(t, dir, "clip1.mp4", clip)
	write(t, dir, "clip1.txt", []byte("p3r5on walking, city at night"))
	write(t, dir, "clip2.mp4", mediatest.MP4{Width: 1920, Height: 1080, Frames: 41}.Bytes()) // no caption, too short
	write(t, dir, "copy.mp4", clip)                                                          // duplicate of clip1
	write(t, dir, "copy.txt", []byte("[trigger] again"))
	write(t, dir, "sub/fast.MOV", mediatest.MP4{Frames: 240, Timescale: 30, Delta: 1, Brand: "qt  "}.Bytes())
	write(t, dir, "sub/fast.txt", []byte("\xef\xbb\xbfrunning"))
	write(t, dir, "still.png", mediatest.PNG(640, 480))
	write(t, dir, "still.txt", []byte("   \n"))
	write(t, dir, "anim.webp", mediatest.AnimatedWebP(320, 240, 4))
	write(t, dir, "anim.txt", []byte("a loop"))
	write(t, dir, "broken.mp4", mediatest.MP4{Frames: 20}.Bytes()[:300])
	write(t, dir, "broken.txt", []byte("x"))
	write(t, dir, "empty.mov", nil)
	write(t, dir, "badcap.jpg", mediatest.JPEG(64, 64, 0))
	write(t, dir, "badcap.txt", []byte{0xff, 0xfe, 0x00})
	write(t, dir, ".hidden.mp4", clip)
	write(t, dir, "_controls/c.png", mediatest.PNG(8, 8))
	write(t, dir, ".thumbs/t.png", mediatest.PNG(8, 8))
	write(t, dir, "notes.gif", []byte("GIF89a"))
	write(t, dir, "orphan.txt", []byte("nobody"))

	o := DefaultOptions()
	o.NumFrames = 81
	o.Resolutions = []int{632}
	o.TriggerWord = "p3r5on"
	o.CacheLatentsToDisk = true
	o.Steps = 100
	o.NumRepeats = 2
	o.VideoProbe = "builtin"
	r, err := Check(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}

	c1 := itemByPath(t, r, "clip1.mp4")
	if c1.Kind != KindVideo || c1.Source != "mp4" || c1.Frames != 81 || c1.FPS != 16 || c1.Duration != 81.0/16 || len(c1.Buckets) != 1 || c1.Buckets[0].Key(true) != "832x480x81f" {
		t.Fatalf("clip1 %+v", c1)
	}
	if c1.Caption.Status != "ok" || !c1.Caption.HasTrigger || c1.Caption.Text != "p3r5on walking,  city at night" {
		t.Fatalf("clip1 caption %+v", c1.Caption)
	}
	if len(c1.Findings) != 0 {
		t.Fatalf("clip1 findings %+v", c1.Findings)
	}
	c2 := itemByPath(t, r, "clip2.mp4")
	wantCodes(t, "clip2", c2.Findings, CodeFramesRepeated, CodeSpeedChanged, CodeCaptionMissing)
	if c2.Buckets[0].Width != 832 || c2.Buckets[0].Height != 480 || c2.Plan.Repeated != 40 {
		t.Fatalf("clip2 %+v %+v", c2.Buckets, c2.Plan)
	}
	cp := itemByPath(t, r, "copy.mp4")
	wantCodes(t, "copy", cp.Findings, CodeDuplicate)
	if cp.Caption.Text != "p3r5on again" {
		t.Fatalf("[trigger] substitution: %q", cp.Caption.Text)
	}
	fast := itemByPath(t, r, "sub/fast.MOV")
	wantCodes(t, "fast", fast.Findings, CodeSpeedChanged, CodeCaptionBOM, CodeTriggerAdded)
	if f := codes(fast.Findings)[CodeSpeedChanged]; !f.Changes || !strings.Contains(f.Message, "sped up") {
		t.Fatalf("fast: %+v", f)
	}
	wantCodes(t, "still", itemByPath(t, r, "still.png").Findings, CodeCaptionEmpty, CodeImageInVideo)
	if b := itemByPath(t, r, "still.png").Buckets[0]; b.Key(true) != "640x480x1f" {
		t.Fatalf("image bucket %s", b.Key(true))
	}
	wantCodes(t, "anim", itemByPath(t, r, "anim.webp").Findings, CodeAnimatedStill)
	wantCodes(t, "broken", itemByPath(t, r, "broken.mp4").Findings, CodeCorrupt)
	wantCodes(t, "empty", itemByPath(t, r, "empty.mov").Findings, CodeEmptyFile)
	wantCodes(t, "badcap", itemByPath(t, r, "badcap.jpg").Findings, CodeBadCaption)
	for _, p := range []string{".hidden.mp4", "_controls/c.png", "notes.gif"} {
		if it := itemByPath(t, r, p); it.Kind != KindSkipped {
			t.Errorf("%s not skipped: %+v", p, it)
		}
	}
	for _, p := range paths(r) {
		if strings.HasPrefix(p, ".thumbs") {
			t.Errorf("hidden folder read: %s", p)
		}
	}
	wantCodes(t, "dataset", r.Findings, CodeHiddenDir, CodeOrphanCaption, CodeLatentCache)

	tt := r.Totals
	// trained: clip1, clip2, copy, fast, still, anim (badcap errors, broken, empty fail)
	if tt.Trained != 6 || tt.Videos != 6 || tt.Images != 3 || tt.Skipped != 3 || tt.Duplicates != 1 {
		t.Fatalf("totals %+v", tt)
	}
	// buckets at 632: 832x480x81f (clip1, clip2, copy) ×2 repeats = 6 → 6 batches;
	// fast 64x48x81f ×2; still 640x480x1f ×2 (640x480 < 632²); anim 320x240x1f ×2.
	if tt.BatchesPerEpoch != 12 || tt.Epochs != 100.0/12 {
		t.Fatalf("epochs: %d batches, %v epochs; buckets %+v", tt.BatchesPerEpoch, tt.Epochs, tt.Buckets)
	}
	if tt.LatentCacheFiles != 6 || tt.LatentCacheBytes <= 3*int64(16*21*60*104*2) {
		t.Fatalf("latent cache %d files %d bytes", tt.LatentCacheFiles, tt.LatentCacheBytes)
	}
	if !r.Fail || !r.Fails() {
		t.Fatal("a dataset with errors must fail")
	}
}

func TestCheckCleanDatasetPasses(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b", "c"} {
		write(t, dir, n+".mp4", mediatest.MP4{Width: 832, Height: 480, Frames: 81 + len(n)*0, Delta: 1000 + uint32(n[0])}.Bytes())
		write(t, dir, n+".txt", []byte("p3r5on does "+n))
	}
	o := DefaultOptions()
	o.NumFrames = 81
	o.Resolutions = []int{480}
	o.TriggerWord = "p3r5on"
	o.VideoProbe = "builtin"
	r, err := Check(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Fail {
		t.Fatalf("clean dataset fails: %+v %+v", r.Findings, r.Items)
	}
	if r.Totals.Trained != 3 || r.Totals.Epochs != 1000.0/3 || r.Totals.Warnings != 0 {
		t.Fatalf("%+v", r.Totals)
	}
	if len(r.VideoProbe) != 1 || r.VideoProbe[0] != "mp4" {
		t.Fatalf("probe %v", r.VideoProbe)
	}
}

func TestCheckFramesNot4nPlus1(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.mp4", mediatest.MP4{Frames: 80}.Bytes())
	write(t, dir, "a.txt", []byte("x"))
	o := DefaultOptions()
	o.NumFrames = 80
	r, err := Check(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	f := codes(r.Findings)[CodeFramesDropped]
	if !f.Changes || !strings.Contains(f.Message, "drops the last 3") || !r.Fail {
		t.Fatalf("%+v", r.Findings)
	}
	if p := itemByPath(t, r, "a.mp4").Plan; p.Dropped != 3 || p.LatentFrames != 20 {
		t.Fatalf("%+v", p)
	}
}

func TestCheckImageDatasetIgnoresVideos(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.mp4", mediatest.MP4{}.Bytes())
	write(t, dir, "a.txt", []byte("x"))
	r, err := Check(context.Background(), dir, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	wantCodes(t, "dataset", r.Findings, CodeVideosIgnored, CodeNoItems)
	if !r.Fail {
		t.Fatal("no items must fail")
	}
}

func TestCheckUnloadTextEncoder(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.png", mediatest.PNG(32, 32))
	write(t, dir, "a.txt", []byte("a red ball"))
	write(t, dir, "b.png", mediatest.PNG(32, 32*2))
	o := DefaultOptions()
	o.UnloadTextEncoder = true
	o.TriggerWord = "zxq"
	r, err := Check(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	f := codes(r.Findings)[CodeCaptionsIgnored]
	if !f.Changes || !strings.Contains(f.Message, `"zxq"`) {
		t.Fatalf("%+v", r.Findings)
	}
	if it := itemByPath(t, r, "b.png"); !it.Caption.Ignored || len(it.Findings) != 1 {
		t.Fatalf("missing caption is moot when captions are ignored: %+v", it.Findings)
	}
	o.CacheTextEmbeddings = true
	r, _ = Check(context.Background(), dir, o)
	if _, ok := codes(r.Findings)[CodeCaptionsIgnored]; ok {
		t.Fatal("cache_text_embeddings keeps captions")
	}
}

func TestCheckDefaultCaptionAndPlaceholder(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.png", mediatest.PNG(32, 32))
	write(t, dir, "b.png", mediatest.PNG(32, 32))
	write(t, dir, "b.txt", []byte("[trigger] in the rain"))
	o := DefaultOptions()
	o.DefaultCaption = "a photo"
	r, _ := Check(context.Background(), dir, o)
	a := itemByPath(t, r, "a.png")
	if a.Caption.Text != "a photo" {
		t.Fatalf("%+v", a.Caption)
	}
	wantCodes(t, "a", a.Findings, CodeDefaultCaption)
	b := itemByPath(t, r, "b.png")
	wantCodes(t, "b", b.Findings, CodeTriggerRemoved)
	if b.Caption.Text != " in the rain" {
		t.Fatalf("%q", b.Caption.Text)
	}
}

func TestCheckFFprobe(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("shell script stand-in")
	}
	dir := t.TempDir()
	write(t, dir, "a.webm", []byte("\x1aE\xdf\xa3 not really a webm"))
	write(t, dir, "a.txt", []byte("x"))
	bin := filepath.Join(t.TempDir(), "ffprobe")
	script := "#!/bin/sh\necho '{\"streams\":[{\"codec_name\":\"vp9\",\"width\":1280,\"height\":720,\"nb_frames\":\"81\",\"avg_frame_rate\":\"16/1\",\"duration\":\"5.0625\"}]}'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.NumFrames = 81
	o.FFprobe = bin
	r, err := Check(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	a := itemByPath(t, r, "a.webm")
	if a.Source != "ffprobe" || a.Frames != 81 || a.Width != 1280 || a.Format != "vp9" || r.VideoProbe[0] != "ffprobe" {
		t.Fatalf("%+v", a)
	}
	// without ffprobe the container is reported, not guessed
	o.FFprobe = filepath.Join(t.TempDir(), "nope")
	r, _ = Check(context.Background(), dir, o)
	wantCodes(t, "a", itemByPath(t, r, "a.webm").Findings, CodeUnprobed)
	o.VideoProbe = "ffprobe"
	if _, err := Check(context.Background(), dir, o); err == nil {
		t.Fatal("forced ffprobe without a binary")
	}
}

func TestCheckBadInput(t *testing.T) {
	if _, err := Check(context.Background(), filepath.Join(t.TempDir(), "missing"), DefaultOptions()); err == nil {
		t.Fatal("missing folder")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	write(t, dir, "a.png", mediatest.PNG(8, 8))
	if _, err := Check(ctx, dir, DefaultOptions()); err == nil {
		t.Fatal("cancelled context")
	}
}
