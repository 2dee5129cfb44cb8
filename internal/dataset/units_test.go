package dataset

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"testing"

	"github.com/daydreamlive/scopectl/internal/dataset/mediatest"
)

// TestBucketSizeGolden compares BucketSize with ai-toolkit's own
// get_bucket_for_image_size, run by Python over the cases in the golden file.
func TestBucketSizeGolden(t *testing.T) {
	raw, err := os.ReadFile("testdata/buckets_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Cases [][6]int }
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) < 100 {
		t.Fatalf("only %d golden cases", len(g.Cases))
	}
	for _, c := range g.Cases {
		w, h := BucketSize(c[0], c[1], c[2], c[3])
		if w != c[4] || h != c[5] {
			t.Errorf("BucketSize(%d, %d, res %d, div %d) = %dx%d, ai-toolkit %dx%d", c[0], c[1], c[2], c[3], w, h, c[4], c[5])
		}
	}
}

func TestBucketFor(t *testing.T) {
	b := bucketFor(1920, 1080, 632, 16, 81)
	if b.Width != 832 || b.Height != 480 || b.Key(true) != "832x480x81f" || b.Key(false) != "832x480" {
		t.Fatalf("1080p at 632: %+v", b)
	}
	if b.ScaleWidth < 832 || b.ScaleHeight < 480 || b.Scale >= 1 {
		t.Fatalf("resize must cover the bucket without upscaling: %+v", b)
	}
	small := bucketFor(100, 100, 512, 16, 1)
	if small.Width != 96 || small.Height != 112 || small.Scale <= 1 {
		t.Fatalf("100x100 keeps its area, rounded up: %+v", small)
	}
}

func TestPlanFrames(t *testing.T) {
	wan, _ := LookupArch("wan21:14b")
	o := DefaultOptions()
	cases := []struct {
		name                  string
		total                 int
		fps                   float64
		set                   func(*Options)
		mode                  string
		n, used, dropped, rep int
		speed                 float64
	}{
		{"80 of 80 drops 3", 80, 16, func(o *Options) { o.NumFrames = 80 }, "shrink", 80, 77, 3, 0, 1},
		{"81 of 81 exact", 81, 16, func(o *Options) { o.NumFrames = 81 }, "shrink", 81, 81, 0, 0, 1},
		{"41 stretched to 81", 41, 16, func(o *Options) { o.NumFrames = 81 }, "stretch", 81, 81, 0, 40, 0.5},
		{"160 at 30 fps into 81", 160, 30, func(o *Options) { o.NumFrames = 81 }, "shrink", 81, 81, 0, 0, 159.0 / 30 / 5},
		{"window every 2nd", 100, 32, func(o *Options) { o.NumFrames = 17; o.ShrinkVideoToFrames = false; o.FPS = 16 }, "window", 17, 17, 0, 0, 1},
		{"window too short stretches", 20, 32, func(o *Options) { o.NumFrames = 17; o.ShrinkVideoToFrames = false; o.FPS = 16 }, "stretch", 17, 17, 0, 0, 19.0 / 32 / 1},
		{"auto trims to 4n+1", 100, 25, func(o *Options) { o.AutoFrameCount = true; o.FPS = 16 }, "auto", 61, 61, 0, 0, (94.0 / 25) / (60.0 / 16)},
		{"auto at 24 fps plays slow at 16", 96, 24, func(o *Options) { o.AutoFrameCount = true }, "auto", 93, 93, 0, 0, 2.0 / 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			oo := o
			c.set(&oo)
			p, err := PlanFrames(c.total, c.fps, oo, wan)
			if err != nil {
				t.Fatal(err)
			}
			if p.Mode != c.mode || p.NumFrames != c.n || p.Used != c.used || p.Dropped != c.dropped || p.Repeated != c.rep {
				t.Fatalf("plan %+v", p)
			}
			if math.Abs(p.Speed-c.speed) > 1e-9 {
				t.Fatalf("speed %v, want %v", p.Speed, c.speed)
			}
		})
	}
	oo := o
	oo.AutoFrameCount = true
	if _, err := PlanFrames(50, 0, oo, wan); !errors.Is(err, errZeroFPS) {
		t.Fatalf("auto_frame_count with 0 fps: %v", err)
	}
	if _, err := PlanFrames(0, 16, o, wan); err == nil {
		t.Fatal("0 frames accepted")
	}
}

// Python's round() rounds halves to even: 41 frames into 81 reads frame 0
// twice (round(0.5) == 0) and frame 2 twice (round(2.5) == 2).
func TestPlanFramesBankersRounding(t *testing.T) {
	wan, _ := LookupArch("wan21")
	o := DefaultOptions()
	o.NumFrames = 81
	p, _ := PlanFrames(41, 16, o, wan)
	want := []int{0, 0, 1, 2, 2, 2, 3, 4, 4}
	if !equalInts(p.Indices[:9], want) {
		t.Fatalf("indices %v, want %v", p.Indices[:9], want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAutoFrameCount(t *testing.T) {
	for _, c := range []struct {
		total int
		fps   float64
		ds    int
		trim  bool
		want  int
	}{
		{81, 16, 16, true, 81}, {81, 16, 16, false, 81}, {80, 16, 16, true, 77}, {80, 16, 16, false, 81},
		{1, 16, 16, true, 1}, {100, 25, 16, true, 61}, {30, 30, 16, true, 13},
	} {
		got, err := AutoFrameCount(c.total, c.fps, c.ds, c.trim, 4)
		if err != nil || got != c.want {
			t.Errorf("AutoFrameCount(%d, %v, %d, %v) = %d, %v; want %d", c.total, c.fps, c.ds, c.trim, got, err, c.want)
		}
	}
}

func TestProbeMP4(t *testing.T) {
	cases := []struct {
		name   string
		m      mediatest.MP4
		w, h   int
		frames int
		fps    float64
		frag   bool
	}{
		{"plain", mediatest.MP4{Width: 832, Height: 480, Frames: 81}, 832, 480, 81, 16, false},
		{"rotated", mediatest.MP4{Width: 832, Height: 480, Frames: 10, Rotation: 90}, 480, 832, 10, 16, false},
		{"rotated 180", mediatest.MP4{Width: 832, Height: 480, Frames: 10, Rotation: 180}, 832, 480, 10, 16, false},
		{"audio first", mediatest.MP4{Frames: 33, AudioTrack: true, Timescale: 30000, Delta: 1001}, 64, 48, 33, 30000.0 / 1001, false},
		{"mdat first", mediatest.MP4{Frames: 12, MdatFirst: true}, 64, 48, 12, 16, false},
		{"mov", mediatest.MP4{Frames: 5, Brand: "qt  ", Codec: "apcn"}, 64, 48, 5, 16, false},
		{"fragmented", mediatest.MP4{Frames: 24, Fragmented: true, Timescale: 24000, Delta: 1000}, 64, 48, 24, 24, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.m.Bytes()
			v, err := ProbeMP4(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			if v.Width != c.w || v.Height != c.h || v.Frames != c.frames || math.Abs(v.FPS-c.fps) > 1e-9 || v.Fragmented != c.frag {
				t.Fatalf("%+v", v)
			}
			if want := float64(c.frames) / c.fps; math.Abs(v.Duration-want) > 1e-9 {
				t.Fatalf("duration %v, want %v", v.Duration, want)
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		b := mediatest.MP4{Frames: 40}.Bytes()
		b = b[:len(b)-100]
		v, err := ProbeMP4(bytes.NewReader(b), int64(len(b)))
		if !errors.Is(err, errTruncatedBox) || v.Frames != 40 {
			t.Fatalf("%+v %v", v, err)
		}
	})
	t.Run("moov missing", func(t *testing.T) {
		b := mediatest.MP4{Frames: 40, MdatFirst: true}.Bytes()
		b = b[:len(b)-50]
		if _, err := ProbeMP4(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("not mp4", func(t *testing.T) {
		b := []byte("\x1aE\xdf\xa3 webm header here")
		if _, err := ProbeMP4(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrNotMP4) {
			t.Fatal(err)
		}
	})
}

func TestProbeImage(t *testing.T) {
	png := mediatest.PNG(64, 32)
	i, err := ProbeImage(png)
	if err != nil || i.Format != "png" || i.Width != 64 || i.Height != 32 {
		t.Fatalf("png %+v %v", i, err)
	}
	j, err := ProbeImage(mediatest.JPEG(64, 32, 6))
	if err != nil || j.Format != "jpeg" || j.Width != 32 || j.Height != 64 || j.Orientation != 6 {
		t.Fatalf("jpeg orientation 6 %+v %v", j, err)
	}
	j, err = ProbeImage(mediatest.JPEG(64, 32, 3))
	if err != nil || j.Width != 64 || j.Orientation != 3 {
		t.Fatalf("jpeg orientation 3 %+v %v", j, err)
	}
	w, err := ProbeImage(mediatest.WebP())
	if err != nil || w.Format != "webp" || w.Width != 1 || w.Animated {
		t.Fatalf("webp %+v %v", w, err)
	}
	a, err := ProbeImage(mediatest.AnimatedWebP(320, 240, 3))
	if err != nil || !a.Animated || a.Frames != 3 || a.Width != 320 || a.Height != 240 {
		t.Fatalf("animated webp %+v %v", a, err)
	}
	if _, err := ProbeImage(png[:len(png)/2]); err == nil {
		t.Fatal("truncated png decoded")
	}
	jp := mediatest.JPEG(64, 32, 0)
	if _, err := ProbeImage(jp[:len(jp)-40]); err == nil {
		t.Fatal("truncated jpeg decoded")
	}
	if _, err := ProbeImage([]byte("hello")); err == nil {
		t.Fatal("text decoded as an image")
	}
}

func TestParseFFprobe(t *testing.T) {
	v, err := parseFFprobe([]byte(`{"streams":[{"codec_name":"vp9","width":1280,"height":720,"avg_frame_rate":"30000/1001","r_frame_rate":"30000/1001","side_data_list":[{"rotation":-90}]}],"format":{"duration":"3.003"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if v.Width != 720 || v.Height != 1280 || v.Frames != 90 || v.Rotation != 270 || v.Codec != "vp9" {
		t.Fatalf("%+v", v)
	}
	v, _ = parseFFprobe([]byte(`{"streams":[{"codec_name":"h264","width":64,"height":48,"nb_frames":"81","avg_frame_rate":"16/1","duration":"5.0625"}]}`))
	if v.Frames != 81 || v.FPS != 16 || v.Duration != 5.0625 {
		t.Fatalf("%+v", v)
	}
	if _, err := parseFFprobe([]byte(`{"streams":[]}`)); err == nil {
		t.Fatal("no stream accepted")
	}
}

func TestEstimateLatentBytes(t *testing.T) {
	wan, _ := LookupArch("wan21")
	// 81 frames of 832×480: 16 channels × 21 latent frames × 60 × 104 × 2 bytes.
	got := EstimateLatentBytes(Bucket{Width: 832, Height: 480, Frames: 81}, wan, 2, true)
	if want := int64(16*21*60*104*2 + 516); got != want {
		t.Fatalf("%d, want %d", got, want)
	}
	if got := EstimateLatentBytes(Bucket{Width: 512, Height: 512, Frames: 1}, wan, 2, false); got != 16*64*64*2+512 {
		t.Fatalf("image latent %d", got)
	}
}

func TestOptionsNormalized(t *testing.T) {
	o, a, err := Options{Arch: "wan22_14b:t2v", CaptionExt: "caption"}.normalized()
	if err != nil || a.Name != "wan22_14b" || o.CaptionExt != ".caption" || o.NumFrames != 1 || o.FPS != 24 || o.Resolutions[0] != 512 {
		t.Fatalf("%+v %+v %v", o, a, err)
	}
	if _, _, err := (Options{Arch: "flux"}).normalized(); err == nil {
		t.Fatal("flux accepted")
	}
	if _, _, err := (Options{Resolutions: []int{-1}}).normalized(); err == nil {
		t.Fatal("negative resolution accepted")
	}
}
