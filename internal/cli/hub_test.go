package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
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
