package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
)

// ffprobeArgs asks for the first video stream's size, frame count, rates and
// rotation, and the container duration (the fallback OpenCV uses).
var ffprobeArgs = []string{"-v", "error", "-select_streams", "v:0",
	"-show_entries", "stream=codec_name,width,height,nb_frames,avg_frame_rate,r_frame_rate,duration:stream_tags=rotate:stream_side_data=rotation:format=duration",
	"-of", "json"}

// probeFFprobe runs ffprobe on path.
func probeFFprobe(ctx context.Context, bin, path string) (VideoInfo, error) {
	cmd := exec.CommandContext(ctx, bin, append(append([]string{}, ffprobeArgs...), path)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if msg == "" {
			msg = err.Error()
		}
		return VideoInfo{}, fmt.Errorf("ffprobe: %s", msg)
	}
	return parseFFprobe(out)
}

type ffprobeOut struct {
	Streams []struct {
		CodecName    string            `json:"codec_name"`
		Width        int               `json:"width"`
		Height       int               `json:"height"`
		NbFrames     string            `json:"nb_frames"`
		AvgFrameRate string            `json:"avg_frame_rate"`
		RFrameRate   string            `json:"r_frame_rate"`
		Duration     string            `json:"duration"`
		Tags         map[string]string `json:"tags"`
		SideData     []struct {
			Rotation *float64 `json:"rotation"`
		} `json:"side_data_list"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

// parseFFprobe turns ffprobe's JSON into what OpenCV would report: nb_frames,
// else round(duration × fps) (cap_ffmpeg_impl get_total_frames); avg_frame_rate,
// else r_frame_rate.
func parseFFprobe(b []byte) (VideoInfo, error) {
	var o ffprobeOut
	if err := json.Unmarshal(b, &o); err != nil {
		return VideoInfo{}, fmt.Errorf("ffprobe output: %w", err)
	}
	if len(o.Streams) == 0 {
		return VideoInfo{}, errors.New("ffprobe: no video stream")
	}
	s := o.Streams[0]
	v := VideoInfo{Codec: s.CodecName, Width: s.Width, Height: s.Height}
	v.FPS = ratio(s.AvgFrameRate)
	if v.FPS == 0 {
		v.FPS = ratio(s.RFrameRate)
	}
	v.Duration = num(s.Duration)
	if v.Duration == 0 {
		v.Duration = num(o.Format.Duration)
	}
	if n, err := strconv.Atoi(s.NbFrames); err == nil && n > 0 {
		v.Frames = n
	} else if v.Duration > 0 && v.FPS > 0 {
		v.Frames = int(math.Floor(v.Duration*v.FPS + 0.5))
	}
	rot := 0.0
	if r, ok := s.Tags["rotate"]; ok {
		rot = num(r)
	}
	for _, sd := range s.SideData {
		if sd.Rotation != nil {
			rot = *sd.Rotation
		}
	}
	q := int(math.Round(rot/90)) % 4
	if q < 0 {
		q += 4
	}
	v.Rotation = q * 90
	if q%2 == 1 {
		v.Width, v.Height = v.Height, v.Width
	}
	return v, nil
}

func ratio(s string) float64 {
	n, d, ok := strings.Cut(s, "/")
	if !ok {
		return num(s)
	}
	a, b := num(n), num(d)
	if b == 0 {
		return 0
	}
	return a / b
}

func num(s string) float64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
