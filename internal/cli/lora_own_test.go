package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

func scribble(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	f.WriteAt([]byte("zzzz"), fi.Size()-8)
	f.Close()
}

// The new user's path from issue 10: add, edit the original in place, then verify,
// install and sync. By default nothing breaks; with --link each command names the damaged
// entry and the fix.
func TestEditedOriginalAfterAdd(t *testing.T) {
	e := newEnv(t)
	p := e.lora("slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	add := decode[map[string]any](t, e.mustRun("lora", "add", "--json", p))
	if m := add["results"].([]any)[0].(map[string]any)["method"]; m != "copy" && m != "reflink" {
		t.Fatalf("method %v", m)
	}
	scribble(t, p)
	e.mustRun("lora", "verify")
	e.mustRun("lora", "install", "slime", "--pipeline", "longlive")

	q := e.lora("linked.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 3})
	orig, _ := os.ReadFile(q)
	if out := e.mustRun("lora", "add", "--link", q); !strings.Contains(out, "hardlink") {
		t.Fatal(out)
	}
	scribble(t, q)
	out, _, code := e.run("lora", "verify")
	if code != 1 || !strings.Contains(out, "corrupt  linked") || !strings.Contains(out, "fix: ") || !strings.Contains(out, "scopectl lora rm linked") {
		t.Fatalf("verify: %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"lora", "install", "linked", "--pipeline", "longlive"},
		{"sync", "linked", "--to", filepath.Join(e.root, "pod-lora")},
	} {
		_, errs, code := e.run(args...)
		if code != 1 || !strings.Contains(errs, `library entry "linked"`) || !strings.Contains(errs, "is damaged") ||
			!strings.Contains(errs, "scopectl lora add") || !strings.Contains(errs, "scopectl lora rm linked") {
			t.Errorf("%v: %d %s", args, code, errs)
		}
	}
	// The original content added again restores the entry.
	back := filepath.Join(e.root, "again.safetensors")
	os.WriteFile(back, orig, 0o644)
	if out := e.mustRun("lora", "add", back); !strings.HasPrefix(out, "restored") {
		t.Fatal(out)
	}
	e.mustRun("lora", "verify")
	e.mustRun("lora", "install", "linked", "--pipeline", "longlive")
}

// Scan after install recognises what scopectl installed, reports counts honestly, does
// not read unchanged files again, and takes --name only for one file.
func TestScanAfterInstall(t *testing.T) {
	e := newEnv(t)
	p := e.lora("slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Diffusers})
	e.mustRun("lora", "add", p)
	e.mustRun("lora", "install", "slime", "--pipeline", "longlive") // converted: other bytes than the entry
	installed := filepath.Join(e.scopeDir, "slime.safetensors")
	old := time.Now().Add(-time.Hour)
	os.Chtimes(installed, old, old)
	out, errs, code := e.run("lora", "scan")
	if code != 0 || strings.Contains(out+errs, "already used") || !strings.Contains(out, "0 new, 0 updated, 1 known, 0 unchanged, 0 skipped") ||
		!strings.Contains(out, "installed by scopectl") {
		t.Fatalf("%d\n%s%s", code, out, errs)
	}
	scan := decode[map[string]any](t, e.mustRun("lora", "scan", "--json"))
	c := scan["counts"].(map[string]any)
	if c["unchanged"] != 1.0 || c["hashed"] != 0.0 || len(scan["indexed"].([]any)) != 0 || len(scan["library"].([]any)) != 1 {
		t.Fatalf("second scan: %v", scan)
	}
	// A foreign file under a taken name gets a derived name; --name is for one file.
	os.MkdirAll(filepath.Join(e.root, "elsewhere"), 0o755)
	other := e.lora("elsewhere/slime.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 8})
	if _, errs, code := e.run("lora", "scan", filepath.Dir(other), "--name", "x"); code != 2 || !strings.Contains(errs, "--name") {
		t.Fatalf("%d %s", code, errs)
	}
	if out := e.mustRun("lora", "scan", other, "--name", "slime-v2"); !strings.Contains(out, "new      "+other+" → slime-v2") {
		t.Fatal(out)
	}
}
