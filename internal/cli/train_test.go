package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTrainInitValidate(t *testing.T) {
	e := newEnv(t)
	clips := filepath.Join(e.root, "clips")
	os.MkdirAll(clips, 0o755)
	os.WriteFile(filepath.Join(clips, "a.mp4"), []byte("x"), 0o644)

	out := e.mustRun("train", "init", "--base", "wan2.1-t2v-1.3b", "--dataset", clips, "--trigger", "sks", "-o", "job.yaml")
	if !strings.Contains(out, "wrote job.yaml") || !strings.Contains(out, "HF_HOME=/workspace/hf") {
		t.Fatalf("%s", out)
	}
	if _, errs, code := e.run("train", "init", "--base", "wan2.1-t2v-1.3b", "--dataset", clips, "-o", "job.yaml"); code != 3 || !strings.Contains(errs, "--force") {
		t.Fatalf("overwrite without --force: %d %s", code, errs)
	}
	e.mustRun("train", "init", "--base", "wan2.1-t2v-1.3b", "--dataset", clips, "-o", "job.yaml", "--force")
	if out := e.mustRun("train", "validate", "job.yaml", "--gpu-mem", "24"); !strings.Contains(out, "job.yaml: ok") {
		t.Fatalf("a fresh config has problems:\n%s", out)
	}
	type res struct {
		Valid    bool
		Problems []struct{ Severity, Field, Message string }
	}
	out, _, code := e.run("train", "validate", "job.yaml", "--gpu-mem", "4", "--json")
	r := decode[res](t, out)
	if code != 1 || r.Valid || len(r.Problems) == 0 || r.Problems[0].Field != "config.process[0].model" {
		t.Fatalf("4 GiB: %d %+v", code, r)
	}

	// a folder of videos trained as images is an error; warnings alone exit 0
	bad := strings.ReplaceAll(trainRead(t, "job.yaml"), "num_frames: 81", "num_frames: 1")
	os.WriteFile("img.yaml", []byte(bad), 0o644)
	out, _, code = e.run("train", "validate", "img.yaml")
	if code != 1 || !strings.Contains(out, "config.process[0].datasets[0].num_frames: 1: ai-toolkit loads only images") {
		t.Fatalf("%d\n%s", code, out)
	}
	ex := filepath.Join(moduleRoot, "internal/aitk/testdata/examples/train_lora_wan21_14b_24gb.yaml")
	out, _, code = e.run("train", "validate", ex, "--gpu-mem", "24")
	if code != 0 || !strings.Contains(out, ": warning: ") {
		t.Fatalf("ai-toolkit's own example: %d\n%s", code, out)
	}
	if _, _, code := e.run("train", "init", "--base", "nope", "--dataset", clips); code != 2 {
		t.Fatalf("unknown base: %d", code)
	}
	if _, _, code := e.run("train", "validate", "x.toml"); code != 2 {
		t.Fatalf("toml: %d", code)
	}
}

func trainRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
