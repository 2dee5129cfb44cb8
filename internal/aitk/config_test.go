package aitk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func examples(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob("testdata/examples/*.yaml")
	if err != nil || len(m) != 3 {
		t.Fatalf("examples: %v %v", m, err)
	}
	return m
}

// Every Wan example ai-toolkit ships must be valid (warnings allowed), on
// the 24 GB GPU it is written for, with a two-minute collection budget.
func TestExamplesValid(t *testing.T) {
	for _, f := range examples(t) {
		c, err := ReadFile(f, ParseOptions{Expand: true, Env: func(string) (string, bool) { return "", false }})
		if err != nil {
			t.Fatal(err)
		}
		ps := Validate(c, ValidateOptions{GPUMemGiB: 24, CollectBudget: 2 * time.Minute})
		for _, p := range ps {
			if p.Severity == Error {
				t.Errorf("%s: %s", filepath.Base(f), p)
			}
		}
		if c.Config.Process[0].Model == nil || c.Config.Process[0].Datasets[0].FolderPath == "" {
			t.Errorf("%s: typed view empty", f)
		}
	}
}

// Writing a parsed config back changes nothing ai-toolkit reads, in either
// format, and YAML keeps every key and comment.
func TestRoundTrip(t *testing.T) {
	for _, f := range examples(t) {
		data, _ := os.ReadFile(f)
		c, err := Parse(data, YAML, ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		y, err := c.Marshal(YAML)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if s := strings.TrimSpace(line); strings.HasPrefix(s, "#") && !strings.Contains(string(y), strings.TrimSpace(strings.TrimPrefix(s, "#"))) {
				t.Errorf("%s: comment lost: %s", filepath.Base(f), s)
			}
		}
		j, err := c.Marshal(JSON)
		if err != nil {
			t.Fatal(err)
		}
		for _, out := range []struct {
			b []byte
			f Format
		}{{y, YAML}, {j, JSON}} {
			d, err := Parse(out.b, out.f, ParseOptions{})
			if err != nil {
				t.Fatalf("%s: reparse %s: %v", f, out.f, err)
			}
			j2, _ := d.Marshal(JSON)
			if string(j2) != string(j) {
				t.Errorf("%s: %s round trip differs:\n%s\n---\n%s", f, out.f, j, j2)
			}
		}
	}
}

func TestUnknownFieldsKeptAndEdits(t *testing.T) {
	src := `job: extension
config:
  name: x
  future_key: {a: 1}
  process:
    - type: diffusion_trainer
      training_folder: /w
      trigger_word: null
      brand_new: [1, 2]
      datasets:
        - folder_path: /d
          resolution: 512
          weird: yes
      model: {arch: "wan21:1b", name_or_path: Wan-AI/Wan2.1-T2V-1.3B-Diffusers, quantize: false, exotic: 3}
`
	c, err := Parse([]byte(src), YAML, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Config.Process[0].Datasets[0].NumFrames = Ptr(81)
	c.Config.Process[0].Model.Quantize = nil
	out, _ := c.Marshal(YAML)
	s := string(out)
	for _, want := range []string{"future_key", "brand_new", "exotic: 3", "weird: yes", "num_frames: 81", "resolution: 512", "trigger_word: null"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	if strings.Contains(s, "quantize") {
		t.Errorf("removed field still written:\n%s", s)
	}
	j, _ := c.Marshal(JSON)
	if !strings.Contains(string(j), `"weird": true`) {
		t.Errorf("YAML 1.1 yes should be true for ai-toolkit:\n%s", j)
	}
}

func TestExpandEnvLikeToolkit(t *testing.T) {
	env := map[string]string{"DATA": "/workspace/data", "A B": "sp"}
	look := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got, err := ExpandEnv("p: ${DATA}/x ${A B} $DATA ${}", look)
	if err != nil || got != "p: /workspace/data/x sp $DATA ${}" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := ExpandEnv("# ${MISSING}\n", look); !errors.Is(err, ErrEnvUnset) {
		t.Fatalf("unset variable in a comment must fail like run.py: %v", err)
	}
	c, err := Parse([]byte("job: extension\nconfig:\n  name: n\n  process: [{type: sd_trainer, training_folder: '${DATA}', x: '[name]'}]\nmeta: {name: '[name]'}\n"), YAML, ParseOptions{Expand: true, Env: look, Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.Process[0].TrainingFolder != "/workspace/data" || c.Meta["name"] != "other" || c.Config.Process[0].Extra["x"] != "other" {
		t.Fatalf("%+v %v", c.Config.Process[0], c.Meta)
	}
	d, _ := Parse([]byte("job: extension # ${HF_TOKEN}\n"), YAML, ParseOptions{})
	if len(d.Placeholders) != 1 || d.Placeholders[0] != "HF_TOKEN" {
		t.Fatal(d.Placeholders)
	}
	ps := Validate(d, ValidateOptions{Env: look})
	if !HasErrors(ps) {
		t.Fatal("unset placeholder should be an error with Env")
	}
}

func TestJSONLikePython(t *testing.T) {
	c, err := Parse([]byte(`{"job":"extension","config":{"name":"a","name":"b","process":[]},"x":1.0}`), JSON, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.Name != "b" {
		t.Fatalf("later duplicate key wins in json.loads: %q", c.Config.Name)
	}
	j, _ := c.Marshal(JSON)
	if !strings.Contains(string(j), `"x": 1.0`) {
		t.Fatalf("floats stay floats: %s", j)
	}
	if _, err := Parse([]byte(`{"job":1} x`), JSON, ParseOptions{}); err == nil {
		t.Fatal("trailing data accepted")
	}
	if _, err := FormatOf("a.toml"); err == nil {
		t.Fatal("toml accepted")
	}
}

func problem(ps []Problem, field string) *Problem {
	for i := range ps {
		if ps[i].Field == field {
			return &ps[i]
		}
	}
	return nil
}

func TestValidateFindsProblems(t *testing.T) {
	src := `job: extension
config:
  name: "bad name!"
  process:
    - type: diffusion_trainer
      training_folder: /workspace/output
      network: {type: lora, linear: 16, linear_alpha: 8}
      save: {save_every: 10, max_step_saves_to_keep: 1}
      datasets:
        - {folder_path: /a, num_frames: 80, resolution: [500, 512], cache_text_embeddings: true}
        - {folder_path: /b, num_frames: 1}
      train: {steps: 100, unload_text_encoder: true}
      model: {arch: wan21, name_or_path: Wan-AI/Wan2.2-TI2V-5B-Diffusers, quantize: false}
      sample: {width: 840, height: 480, num_frames: 40, sample_every: 10}
      logging: {use_ui_logger: true, log_every: 10}
    - type: sd_trainer
      training_folder: /w
      network: {linear: 32}
      save: {save_every: 5, max_step_saves_to_keep: 2}
      datasets: [{folder_path: /c, num_frames: 81}]
      model: {arch: wan99, name_or_path: x/y}
`
	c, err := Parse([]byte(src), YAML, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps := Validate(c, ValidateOptions{GPUMemGiB: 8, CollectBudget: time.Minute, Media: func(string) (int, int, bool) { return 3, 0, true }})
	for _, tc := range []struct {
		field string
		sev   Severity
	}{
		{"config.name", Error},
		{"config.process[0].model.name_or_path", Error},
		{"config.process[0].save.max_step_saves_to_keep", Error},
		{"config.process[0].datasets[0].num_frames", Warning},
		{"config.process[0].datasets[0].resolution[0]", Warning},
		{"config.process[0].datasets[1].num_frames", Error}, // a folder of videos read as images
		{"config.process[0].datasets[1].cache_text_embeddings", Error},
		{"config.process[0].train.unload_text_encoder", Warning},
		{"config.process[0].sample.width", Error},
		{"config.process[0].sample.num_frames", Warning},
		{"config.process[0].network.linear_alpha", Warning},
		{"config.process[0].logging.log_every", Warning},
		{"config.process[0].model", Error}, // 8 GiB GPU
		{"config.process[1].model.arch", Error},
		{"config.process[1].save.save_every", Error}, // 2 × 5 steps × 0.5 s < 1 min
	} {
		p := problem(ps, tc.field)
		if p == nil {
			t.Errorf("no problem at %s", tc.field)
			continue
		}
		if p.Severity != tc.sev {
			t.Errorf("%s: %s, want %s", p, p.Severity, tc.sev)
		}
	}
	if t.Failed() {
		for _, p := range ps {
			t.Log(p.Severity, p)
		}
	}
	if !HasErrors(ps) || ps[0].Severity != Error {
		t.Fatal("errors first")
	}
}

func TestInitPassesValidate(t *testing.T) {
	for _, b := range Bases() {
		for _, g := range []float64{24, 48, 80, 141} {
			c, err := Init(InitOptions{Base: b.Name, DatasetDir: "/workspace/data/My Clips", GPUMemGiB: g, TriggerWord: "sks"})
			if err != nil {
				t.Errorf("%s %v GiB: %v", b.Name, g, err)
				continue
			}
			p := c.Config.Process[0]
			if c.Config.Name != "My_Clips_lora" || p.TrainingFolder != "/workspace/output" || c.Env["HF_HOME"] == "" ||
				!*p.Logging.UseUILogger || *p.Logging.LogEvery != 1 || (*p.Datasets[0].NumFrames-1)%4 != 0 {
				t.Errorf("%s: %+v", b.Name, c.Config)
			}
			out, err := c.Marshal(YAML)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Parse(out, YAML, ParseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, pr := range Validate(d, ValidateOptions{GPUMemGiB: g, CollectBudget: 2 * time.Minute}) {
				if pr.Severity == Error {
					t.Errorf("%s %v GiB: %s", b.Name, g, pr)
				}
			}
		}
	}
	if _, err := Init(InitOptions{Base: "sdxl", DatasetDir: "/d"}); err == nil {
		t.Error("unknown base accepted")
	}
	if _, err := Init(InitOptions{Base: "wan2.1-t2v-14b", DatasetDir: "/d", GPUMemGiB: 8}); err == nil {
		t.Error("14B on 8 GiB accepted")
	}
}

func TestArch(t *testing.T) {
	if ArchBase("wan21:14b") != "wan21" || !KnownArch("wan22_5b") || KnownArch("wan23") || !KnownArch("flex1") {
		t.Fatal("arch table")
	}
	if _, ok := LookupWanArch("wan22_14b:t2v"); !ok {
		t.Fatal("tagged arch")
	}
}
