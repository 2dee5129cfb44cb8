package dataset

import "math"

// Bucket is where one item lands for one configured resolution: ai-toolkit
// scales the item so it covers Width×Height, then centre-crops to it.
type Bucket struct {
	Resolution int `json:"resolution"`
	Width      int `json:"width"`
	Height     int `json:"height"`
	Frames     int `json:"frames"` // frames the loader delivers: 1 for images; part of the bucket key in video datasets
	// ScaleWidth×ScaleHeight is the size the media is resized to before the crop.
	ScaleWidth  int `json:"scale_width"`
	ScaleHeight int `json:"scale_height"`
	// Scale is the resize factor (>1: upscaled, which ai-toolkit only does by
	// rounding the bucket up to the next multiple).
	Scale float64 `json:"scale"`
	// Cropped is the fraction of the resized area the crop cuts away.
	Cropped float64 `json:"cropped"`
}

// Key is ai-toolkit's bucket key: "WxH", plus "xNf" in a video dataset.
func (b Bucket) Key(video bool) string {
	k := itoa(b.Width) + "x" + itoa(b.Height)
	if video {
		k += "x" + itoa(b.Frames) + "f"
	}
	return k
}

// BucketSize is toolkit/buckets.py get_bucket_for_image_size, line for line:
// the area is min(source, resolution²) (no upscaling), the aspect is kept and
// both sides are rounded to multiples of divisibility, choosing among the four
// floor/ceil candidates whose area fits under resolution² the one closest to the
// target area (the first such in floor/ceil order on a tie, as Python's min).
func BucketSize(width, height, resolution, divisibility int) (int, int) {
	total := width * height
	maxPixels := resolution * resolution
	target := min(total, maxPixels)
	scaler := math.Sqrt(float64(target) / float64(total))
	wRaw := float64(width) * scaler / float64(divisibility)
	hRaw := float64(height) * scaler / float64(divisibility)
	fw, cw := int(math.Floor(wRaw))*divisibility, int(math.Ceil(wRaw))*divisibility
	fh, ch := int(math.Floor(hRaw))*divisibility, int(math.Ceil(hRaw))*divisibility
	candidates := [][2]int{{fw, fh}, {fw, ch}, {cw, fh}, {cw, ch}}
	var capped [][2]int
	for _, c := range candidates {
		if c[0] > 0 && c[1] > 0 && c[0]*c[1] <= maxPixels {
			capped = append(capped, c)
		}
	}
	if len(capped) == 0 {
		capped = [][2]int{{max(divisibility, fw), max(divisibility, fh)}}
	}
	best := capped[0]
	for _, c := range capped[1:] {
		if absInt(c[0]*c[1]-target) < absInt(best[0]*best[1]-target) {
			best = c
		}
	}
	return best[0], best[1]
}

// bucketFor is BucketsMixin.setup_buckets for one item (scale 1, no square or
// random crop): the bucket, the resize that covers it and the centre crop.
func bucketFor(width, height, resolution, divisibility, frames int) Bucket {
	bw, bh := BucketSize(width, height, resolution, divisibility)
	s := max(float64(bw)/float64(width), float64(bh)/float64(height))
	sw := int(math.Ceil(float64(width) * s))
	sh := int(math.Ceil(float64(height) * s))
	b := Bucket{Resolution: resolution, Width: bw, Height: bh, Frames: frames, ScaleWidth: sw, ScaleHeight: sh, Scale: s}
	if sw > 0 && sh > 0 {
		b.Cropped = 1 - float64(bw*bh)/float64(sw*sh)
	}
	return b
}

func absInt(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
