// Package trainpreview runs `scopectl train run --preview` end to end: each
// collected checkpoint installed into a running Scope (the stand-in) over SSH and
// loaded into its pipeline while the job trains.
package trainpreview

import (
	"context"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
	. "github.com/daydreamlive/scopectl/internal/train/traintest"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func TestTrainRunPreview(t *testing.T) {
	w := NewWorld(t, aitktest.Config{Name: "prevlora", Steps: 40, SaveEvery: 10, Keep: 2, SampleEvery: 20, Prompts: []string{"a sks cat", "a sks dog"}})
	loraDir := filepath.Join(t.TempDir(), "models", "lora")
	os.MkdirAll(loraDir, 0o755)
	// A LoRA the user had loaded already stays loaded beside the preview.
	other := filepath.Join(loraDir, "style.safetensors")
	os.WriteFile(other, []byte("x"), 0o644)
	url := StartScope(t, loraDir, "--load-delay", "200ms")
	sc := &scope.Client{Base: url}
	ctx := context.Background()
	if err := sc.LoadPipeline(ctx, "longlive", []scope.LoRALoad{{Path: other, Scale: 0.5}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.WaitLoaded(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	// The pipeline is the one Scope runs (no --preview-pipeline).
	var loads []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // what Scope had loaded over the run
		defer close(done)
		for {
			if st, err := sc.PipelineStatus(ctx); err == nil && st.Status == "loaded" {
				for _, l := range st.LoadedLoRAs {
					if p := path.Base(l.Path); strings.HasPrefix(p, "prevlora") && (len(loads) == 0 || loads[len(loads)-1] != p) {
						loads = append(loads, p)
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	out := w.Scopectl(w.RunArgs("--env", aitktest.EnvStepMS+"=100", "--preview", w.Host+loraDir, "--preview-scope", url)...)
	var res train.CollectResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if res.Phase != train.PhaseDone {
		t.Fatalf("job: %s", out)
	}
	st, err := sc.WaitLoaded(ctx, 20*time.Second)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	newest := res.Checkpoints[len(res.Checkpoints)-1]
	var paths []string
	for _, l := range st.LoadedLoRAs {
		paths = append(paths, l.Path)
	}
	t.Logf("checkpoints %d, loads seen %v, loaded now %v", len(res.Checkpoints), loads, paths)
	if st.PipelineID != "longlive" || len(paths) != 2 || !strings.HasPrefix(path.Base(paths[0]), newest.Name) || paths[1] != other {
		t.Fatalf("pipeline %s loaded with %v; want the newest checkpoint %s and %s", st.PipelineID, paths, newest.Name, other)
	}
	if len(loads) < 2 {
		t.Errorf("the pipeline was loaded with only %v over the run: want each checkpoint as it came", loads)
	}
	// Installed as lora install would: the file Scope lists and the manifest entry.
	installed, err := sc.LoRAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range installed {
		if strings.HasPrefix(path.Base(l.Path), "prevlora") {
			n++
		}
	}
	if n < 2 {
		t.Errorf("Scope lists %d of the job's checkpoints: %+v", n, installed)
	}
	man, err := os.ReadFile(filepath.Join(loraDir, "lora_manifest.json"))
	if err != nil || !strings.Contains(string(man), path.Base(paths[0])) {
		t.Errorf("manifest lacks %s: %v\n%s", paths[0], err, man)
	}

	compare(t, w, res.JobID)
}

// train compare: the samples of steps 20 and 40 side by side; a step never saved is
// named; --html inlines every image.
func compare(t *testing.T, w *World, id string) {
	var c train.Comparison
	if err := json.Unmarshal([]byte(w.Scopectl("train", "compare", id, "--steps", "20,40", "--json")), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Steps) != 2 || c.Steps[0].Step != 20 || c.Steps[1].Step != 40 || len(c.Prompts) == 0 {
		t.Fatalf("compare: %+v", c)
	}
	for _, r := range c.Prompts {
		if r.Prompt == "" || len(r.Samples) != 2 || r.Samples[0] == "" || r.Samples[1] == "" {
			t.Errorf("prompt %d: %+v", r.Index, r)
		}
	}
	text := w.Scopectl("train", "compare", id, "--steps", "20,40,25")
	if !strings.Contains(text, "step 20") || !strings.Contains(text, c.Prompts[0].Samples[1]) {
		t.Errorf("compare text:\n%s", text)
	}
	page := filepath.Join(t.TempDir(), "cmp.html")
	w.Scopectl("train", "compare", id, "--html", page)
	b, err := os.ReadFile(page)
	if err != nil || strings.Count(string(b), "src=\"data:image/") < 2*len(c.Prompts) {
		t.Errorf("html page: %v, %d images", err, strings.Count(string(b), "src=\"data:image/"))
	}
	if _, _, code := w.ScopectlCode("train", "compare", id, "--steps", "25"); code != 1 {
		t.Errorf("a step never saved: exit %d", code)
	}
}
