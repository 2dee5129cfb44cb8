package aitktest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
)

// The image runs like ostris/aitoolkit: `python run.py CFG` from /app/ai-toolkit.
func TestImage(t *testing.T) {
	reg := deploytest.StartRegistry(t)
	ref := Image(t, reg)
	dir := t.TempDir()
	ds := filepath.Join(dir, "ds")
	os.MkdirAll(ds, 0o777)
	os.WriteFile(filepath.Join(ds, "a.jpg"), []byte("x"), 0o644)
	c := Config{Name: "img", TrainingFolder: "/work/out", Dataset: "/work/ds", Steps: 4, SaveEvery: 2, Keep: 3, SampleEvery: 2, Prompts: []string{"p"}}
	if err := os.WriteFile(filepath.Join(dir, "job.json"), []byte(c.JSON()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := deploytest.Docker(ctx, "run", "--rm", "-e", "STANDIN_STEP_MS=1", "-v", dir+":/work", ref, "python", "run.py", "/work/job.json", "-l", "/work/log/log.txt")
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Saved checkpoint to /work/out/img/img_000000002.safetensors") {
		t.Errorf("output:\n%s", out)
	}
	for _, p := range []string{"out/img/img.safetensors", "out/img/optimizer.pt", "out/img/loss_log.db", "log/log.txt"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
}
