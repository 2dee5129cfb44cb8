package aitk

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParseConfig: parsing never panics, a parsed config always writes back
// in both formats, and its JSON is a fixed point.
func FuzzParseConfig(f *testing.F) {
	m, _ := filepath.Glob("testdata/examples/*.yaml")
	for _, p := range m {
		b, _ := os.ReadFile(p)
		f.Add(b, false)
	}
	f.Add([]byte(`{"job":"extension","config":{"name":"x","process":[{"type":"diffusion_trainer","datasets":[{"resolution":512}]}]}}`), true)
	f.Add([]byte("a: &x {b: 1}\nc: *x\nd: {<<: *x, e: yes}\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		if len(data) > 1<<16 {
			return
		}
		format := YAML
		if isJSON {
			format = JSON
		}
		c, err := Parse(data, format, ParseOptions{})
		if err != nil {
			return
		}
		_ = Validate(c, ValidateOptions{GPUMemGiB: 24, CollectBudget: time.Minute})
		for _, p := range c.Config.Process {
			EstimateMemory(&p)
		}
		y, err := c.Marshal(YAML)
		if err != nil {
			t.Fatalf("marshal yaml: %v", err)
		}
		j, err := c.Marshal(JSON)
		if err != nil {
			t.Fatalf("marshal json: %v", err)
		}
		d, err := Parse(j, JSON, ParseOptions{})
		if err != nil {
			if strings.Contains(string(j), "Infinity") || strings.Contains(string(j), "NaN") {
				return // Python's json spellings, which Go's decoder refuses
			}
			t.Fatalf("reparse json: %v\n%s", err, j)
		}
		j2, err := d.Marshal(JSON)
		if err != nil || !bytes.Equal(j, j2) {
			t.Fatalf("json not a fixed point: %v\n%s\n---\n%s", err, j, j2)
		}
		if _, err := Parse(y, YAML, ParseOptions{}); err != nil {
			t.Fatalf("reparse yaml: %v\n%s", err, y)
		}
	})
}

// FuzzParseLine: any console line parses without panic into sane events.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"my_lora:  17%|#7        | 340/2000 [11:20<55:20,  2.00s/it, lr: 1.0e-04 loss: 3.915e-01]",
		"my_lora:   0%|          | 0/2000 [00:00<?, ?it/s]",
		" 50%|█████     | 5/10 [1:00:00<00:01,  1.25it/s]",
		"Saved checkpoint to /workspace/output/j/j_000000250.safetensors",
		"Removing old save: /w/j_000000001.safetensors",
		"# OOM during training step, skipping batch 1/3 #",
		"#### IMPORTANT RESUMING FROM /w/j.safetensors ####",
		"Found step 250 in metadata, starting from there",
		"Error running job: CUDA out of memory",
		" - 1 completed job",
		"\x1b[31mSaving at step 5\x1b[0m",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		ev, ok := ParseLine(line)
		if !ok {
			return
		}
		if ev.Kind == "" || ev.Step < 0 || ev.Total < 0 || ev.SecondsPerStep < 0 {
			t.Fatalf("%q: %+v", line, ev)
		}
		if _, err := ParseLog(strings.NewReader(line + "\r" + line)); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzOutputNames: names that parse format back to themselves.
func FuzzOutputNames(f *testing.F) {
	for _, s := range []string{
		"my_lora_000000250.safetensors", "j_123456789_000000001_high_noise.safetensors",
		"1724085406830__000000500_03.webp", "1724085406830__0.jpg", "my_lora.safetensors",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if c, ok := ParseCheckpointName(s); ok && c.String() != s {
			t.Fatalf("checkpoint %q -> %+v -> %q", s, c, c.String())
		}
		if c, ok := ParseCheckpointNameFor("my_lora", s); ok && c.String() != s {
			t.Fatalf("checkpoint for job %q -> %+v -> %q", s, c, c.String())
		}
		if n, ok := ParseSampleName(s); ok && n.String() != s {
			t.Fatalf("sample %q -> %+v -> %q", s, n, n.String())
		}
	})
}
