package dataset

import (
	"errors"
	"math"
)

// FramePlan is how ai-toolkit turns one clip into training frames
// (ImageProcessingDTOMixin.load_and_process_video and get_auto_frame_count),
// then what Wan's VAE keeps of them.
type FramePlan struct {
	// Mode: "shrink" (evenly spaced over the whole clip, shrink_video_to_frames),
	// "stretch" (the same spacing because the clip is too short), "window" (every
	// k-th frame at the dataset fps from a random start, shrink_video_to_frames
	// false), or "auto" (auto_frame_count with trim_auto_frame_count_tail: frames
	// at the dataset fps from the start, tail trimmed).
	Mode string `json:"mode"`
	// NumFrames is the frame count the loader delivers (num_frames, or the
	// auto_frame_count result).
	NumFrames int `json:"num_frames"`
	// Indices are the source frames read, in order (for "window", from start 0).
	Indices []int `json:"-"`
	// Used is what the VAE encodes: 1+4k frames; Dropped trailing frames are
	// silently discarded (num_frames not 4n+1).
	Used    int `json:"used"`
	Dropped int `json:"dropped"`
	// LatentFrames is the temporal size of the latent: 1 + (NumFrames-1)/4.
	LatentFrames int `json:"latent_frames"`
	// Repeated counts used frames that repeat an earlier one (clip shorter than
	// the frames asked for).
	Repeated int `json:"repeated"`
	// SourceSeconds is the stretch of the clip between the first and last used
	// frame; TrainedSeconds is how long those frames last at the model's native
	// fps; Speed is their ratio (>1: motion is learnt faster than filmed).
	SourceSeconds  float64 `json:"source_seconds"`
	TrainedSeconds float64 `json:"trained_seconds"`
	Speed          float64 `json:"speed"`
}

var errZeroFPS = errors.New("the clip reports 0 fps: auto_frame_count divides by it and ai-toolkit skips the clip")

// AutoFrameCount is get_auto_frame_count: the clip's length at the dataset fps,
// snapped down to 1+k·tc (trim_auto_frame_count_tail) or to k·tc+1.
func AutoFrameCount(total int, videoFPS float64, datasetFPS int, trimTail bool, tc int) (int, error) {
	if videoFPS == 0 || math.IsNaN(videoFPS) {
		return 0, errZeroFPS
	}
	seconds := float64(total) / videoFPS
	desired := int(seconds * float64(datasetFPS)) // Python int(): towards zero
	if trimTail {
		desired = max(0, desired-1) / tc * tc
	} else {
		desired = pyFloorDiv(desired, tc) * tc
	}
	return desired + 1, nil
}

// PlanFrames replays ai-toolkit's frame selection for a clip of total frames at
// videoFPS. Python's round() rounds half to even; so does this.
func PlanFrames(total int, videoFPS float64, o Options, a Arch) (FramePlan, error) {
	if total <= 0 {
		return FramePlan{}, errors.New("the container reports 0 frames")
	}
	n := o.NumFrames
	if o.AutoFrameCount {
		var err error
		if n, err = AutoFrameCount(total, videoFPS, o.FPS, o.TrimAutoFrameCountTail, a.TemporalCompression); err != nil {
			return FramePlan{}, err
		}
	}
	maxIdx := total - 1
	p := FramePlan{NumFrames: n, Indices: make([]int, n)}
	even := func() {
		interval := 0.0
		if n > 1 {
			interval = float64(maxIdx) / float64(n-1)
		}
		for i := range n {
			p.Indices[i] = min(int(math.RoundToEven(float64(i)*interval)), maxIdx)
		}
	}
	switch {
	case o.AutoFrameCount && o.TrimAutoFrameCountTail:
		p.Mode = "auto"
		ratio := 1.0
		if videoFPS > 0 {
			ratio = videoFPS / float64(o.FPS)
		}
		for i := range n {
			p.Indices[i] = min(int(math.RoundToEven(float64(i)*ratio)), maxIdx)
		}
	case o.ShrinkVideoToFrames || total < n:
		p.Mode = "shrink"
		if total < n {
			p.Mode = "stretch"
		}
		even()
	default:
		k := max(1, int(math.RoundToEven(videoFPS/float64(o.FPS))))
		if total/k < n {
			p.Mode = "stretch"
			even()
		} else {
			p.Mode = "window"
			for i := range n {
				p.Indices[i] = min(i*k, maxIdx)
			}
		}
	}
	tc := a.TemporalCompression
	p.LatentFrames = 1 + (n-1)/tc
	p.Used = 1 + (p.LatentFrames-1)*tc
	p.Dropped = n - p.Used
	seen := map[int]bool{}
	for _, ix := range p.Indices[:p.Used] {
		if seen[ix] {
			p.Repeated++
		}
		seen[ix] = true
	}
	if p.Used > 1 && videoFPS > 0 && a.NativeFPS > 0 {
		p.SourceSeconds = float64(p.Indices[p.Used-1]-p.Indices[0]) / videoFPS
		p.TrainedSeconds = float64(p.Used-1) / a.NativeFPS
		p.Speed = p.SourceSeconds / p.TrainedSeconds
	}
	return p, nil
}

func pyFloorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
