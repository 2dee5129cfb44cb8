package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

func TestHubPullHF(t *testing.T) {
	e := newEnv(t)
	srv := hftest.Start(t, hftest.Options{})
	files, err := hftest.DemoFiles()
	if err != nil {
		t.Fatal(err)
	}
	srv.AddRepo(hftest.Repo{ID: "daydream/demo-lora", Files: files})
	cache := filepath.Join(e.root, "hf", "hub")
	t.Setenv("HF_ENDPOINT", srv.URL())
	t.Setenv("HF_HUB_CACHE", cache)
	token := "hf_" + strings.Repeat("Qw3r", 9)
	t.Setenv("HF_TOKEN", token)
	srv.AddToken(token, false)
	out := e.mustRun("hub", "pull", "hf://daydream/demo-lora", "--json")
	if strings.Contains(out, token) {
		t.Fatal("token in output")
	}
	doc := decode[map[string]any](t, out)
	fs := doc["files"].([]any)
	if len(fs) != 3 {
		t.Fatalf("%d files: %s", len(fs), out)
	}
	libs := 0
	for _, f := range fs {
		m := f.(map[string]any)
		if _, err := os.Stat(m["cache_path"].(string)); err != nil {
			t.Fatalf("cache path: %v", err)
		}
		if l, ok := m["lora"].(map[string]any); ok {
			libs++
			if l["managed"] != false || l["origins"].([]any)[0].(map[string]any)["kind"] != "huggingface" {
				t.Fatalf("library entry %v", l)
			}
		}
	}
	if libs != 2 {
		t.Fatalf("%d LoRAs entered the library", libs)
	}
	if _, err := os.Stat(filepath.Join(cache, "models--daydream--demo-lora", "refs", "main")); err != nil {
		t.Fatal("no refs/main in the cache")
	}
	// Pulling again downloads nothing.
	again := decode[map[string]any](t, e.mustRun("hub", "pull", "hf://daydream/demo-lora", "--json"))
	for _, f := range again["files"].([]any) {
		if f.(map[string]any)["downloaded"] == true {
			t.Fatal("second pull downloaded")
		}
	}
	if _, errs, code := e.run("hub", "pull", "hf://daydream/missing"); code == 0 || !strings.Contains(errs, "missing") {
		t.Fatalf("%d %s", code, errs)
	}
}

func TestHubPushAndPullBack(t *testing.T) {
	e := newEnv(t)
	srv := hftest.Start(t, hftest.Options{})
	token := "hf_" + strings.Repeat("Wr1t", 9)
	srv.AddWriteToken(token)
	srv.AddToken(token, false)
	t.Setenv("HF_ENDPOINT", srv.URL())
	t.Setenv("HF_HUB_CACHE", filepath.Join(e.root, "hf", "hub"))
	t.Setenv("HF_TOKEN", token)
	p := e.lora("mine.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Kohya, Alpha: 2, Rank: 4, Blocks: []int{0}})
	e.mustRun("lora", "add", p)
	out := e.mustRun("hub", "push", "mine", "hf://daydream/mine", "--create", "--trigger", "sks style", "--json")
	if strings.Contains(out, token) {
		t.Fatal("token in output")
	}
	res := decode[map[string]any](t, out)
	if res["commit"] == "" || len(res["files"].([]any)) != 2 {
		t.Fatal(res)
	}
	again := decode[map[string]any](t, e.mustRun("hub", "push", "mine", "hf://daydream/mine", "--trigger", "sks style", "--json"))
	for _, f := range again["files"].([]any) {
		m := f.(map[string]any)
		if m["path"] == "mine.safetensors" && m["uploaded"] == true {
			t.Fatal("the same LFS object was uploaded twice")
		}
	}
	// Pull it back through the cache: the same bytes, found again in the library.
	pulled := decode[map[string]any](t, e.mustRun("hub", "pull", "hf://daydream/mine", "--json"))
	for _, f := range pulled["files"].([]any) {
		m := f.(map[string]any)
		if m["path"] == "mine.safetensors" {
			b, _ := os.ReadFile(m["cache_path"].(string))
			orig, _ := os.ReadFile(p)
			if string(b) != string(orig) {
				t.Fatal("pulled bytes differ from pushed")
			}
		}
		if m["path"] == "README.md" {
			card, _ := os.ReadFile(m["cache_path"].(string))
			if !strings.Contains(string(card), "sks style") || !strings.Contains(string(card), "Wan2.1") {
				t.Fatalf("model card: %s", card)
			}
		}
	}
}
