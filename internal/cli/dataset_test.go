package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/dataset/mediatest"
)

func TestDatasetCheckCLI(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.root, "ds")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "a.mp4"), mediatest.MP4{Width: 832, Height: 480, Frames: 81}.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("p3r5on walks"), 0o644)

	// a clean video dataset passes
	out, errs, code := e.run("dataset", "check", dir, "--num-frames", "81", "--resolution", "632", "--trigger-word", "p3r5on")
	if code != 0 || !strings.Contains(out, "832x480x81f") || !strings.Contains(out, "OK") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}

	// the same folder through an ai-toolkit config: 80 frames and unload_text_encoder fail
	t.Setenv("DS_ROOT", dir)
	cfg := filepath.Join(e.root, "job.yaml")
	os.WriteFile(cfg, []byte(`job: extension
config:
  name: t
  process:
    - type: diffusion_trainer
      trigger_word: p3r5on
      datasets:
        - folder_path: ${DS_ROOT}
          caption_ext: txt
          num_frames: 80
          resolution: [480, 632]
          cache_latents_to_disk: true
          num_repeats: 3
      train: {steps: 500, batch_size: 1, gradient_accumulation: 2, unload_text_encoder: true}
      model: {arch: "wan21:14b", name_or_path: x}
`), 0o644)
	out, errs, code = e.run("--json", "dataset", "check", "--config", cfg)
	if code != 1 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	r := decode[dataset.Report](t, out)
	o := r.Options
	if o.NumFrames != 80 || len(o.Resolutions) != 2 || o.TriggerWord != "p3r5on" || !o.UnloadTextEncoder || o.Arch != "wan21" || o.NumRepeats != 3 || o.GradAccum != 2 || o.CaptionExt != ".txt" {
		t.Fatalf("options %+v", o)
	}
	if !r.Fail || r.Totals.BatchesPerEpoch != 6 || r.Totals.Epochs != 500.0*2/6 || r.Totals.LatentCacheFiles != 2 {
		t.Fatalf("totals %+v", r.Totals)
	}
	var codes []string
	for _, f := range r.Findings {
		codes = append(codes, f.Code)
	}
	if s := strings.Join(codes, " "); !strings.Contains(s, "frames_dropped") || !strings.Contains(s, "captions_ignored") {
		t.Fatalf("findings %s", s)
	}

	// an unset ${VAR} is refused, as ai-toolkit refuses it
	os.Unsetenv("DS_ROOT")
	if _, _, code := e.run("dataset", "check", "--config", cfg); code != 2 {
		t.Fatalf("unset variable: exit %d", code)
	}
	if _, _, code := e.run("dataset", "check"); code != 2 {
		t.Fatalf("no folder: exit %d", code)
	}
}
