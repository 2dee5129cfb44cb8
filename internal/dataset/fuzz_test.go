package dataset

import (
	"bytes"
	"testing"

	"github.com/daydreamlive/scopectl/internal/dataset/mediatest"
)

// FuzzProbeMP4 feeds the container reader arbitrary bytes: it must never
// panic, allocate without bound or report impossible numbers.
func FuzzProbeMP4(f *testing.F) {
	for _, m := range []mediatest.MP4{{}, {Rotation: 90}, {AudioTrack: true}, {MdatFirst: true}, {Fragmented: true}, {Brand: "qt  "}} {
		b := m.Bytes()
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ProbeMP4(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if v.Frames < 0 || v.FPS < 0 || v.Duration < 0 || v.Width < 0 || v.Height < 0 {
			t.Fatalf("impossible %+v", v)
		}
	})
}

// FuzzProbeImage covers the WebP RIFF walk, the PNG chunk walk and the Exif
// orientation reader behind ProbeImage.
func FuzzProbeImage(f *testing.F) {
	for _, b := range [][]byte{mediatest.PNG(4, 3), mediatest.JPEG(4, 3, 6), mediatest.WebP(), mediatest.AnimatedWebP(8, 8, 2)} {
		f.Add(b)
		f.Add(b[:len(b)*2/3])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		i, err := ProbeImage(b)
		if err == nil && (i.Width <= 0 || i.Height <= 0) {
			t.Fatalf("decoded without a size: %+v", i)
		}
		if o := exifOrientation(b); o < 0 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
	})
}

func FuzzParseFFprobe(f *testing.F) {
	f.Add([]byte(`{"streams":[{"codec_name":"vp9","width":1280,"height":720,"avg_frame_rate":"30000/1001","side_data_list":[{"rotation":-90}]}],"format":{"duration":"3.003"}}`))
	f.Add([]byte(`{"streams":[{"nb_frames":"81","avg_frame_rate":"0/0","r_frame_rate":"16/1","tags":{"rotate":"90"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseFFprobe(b)
		if err == nil && (v.Rotation < 0 || v.Rotation >= 360) {
			t.Fatalf("rotation %d", v.Rotation)
		}
	})
}

// FuzzBucketSize checks the bucket rules for any size: sides are positive
// multiples of the divisibility, and the area stays within resolution² unless
// the image is so thin that ai-toolkit's fallback applies.
func FuzzBucketSize(f *testing.F) {
	f.Add(1920, 1080, 632, 16)
	f.Add(1, 1, 512, 32)
	f.Add(15, 4000, 256, 16)
	f.Fuzz(func(t *testing.T, w, h, res, div int) {
		if w <= 0 || h <= 0 || w > 1<<15 || h > 1<<15 || res <= 0 || res > 1<<13 || (div != 16 && div != 32) {
			return
		}
		bw, bh := BucketSize(w, h, res, div)
		if bw <= 0 || bh <= 0 || bw%div != 0 || bh%div != 0 {
			t.Fatalf("%dx%d at %d/%d: bucket %dx%d", w, h, res, div, bw, bh)
		}
		if bw*bh > res*res && bw != div && bh != div {
			t.Fatalf("%dx%d at %d/%d: bucket %dx%d over res²", w, h, res, div, bw, bh)
		}
	})
}
