package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/cli"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// moduleRoot is taken before any test changes directory.
var moduleRoot, _ = filepath.Abs("../..")

// env isolates a test: its own HOME, XDG dirs, data dir and Scope LoRA dir, and a working
// directory without a .env.
type env struct {
	t        *testing.T
	root     string
	scopeDir string
	dataDir  string
}

func newEnv(t *testing.T) *env {
	root := t.TempDir()
	e := &env{t: t, root: root, scopeDir: filepath.Join(root, "scope-lora"), dataDir: filepath.Join(root, "data")}
	for k, v := range map[string]string{
		"HOME": root, "XDG_CONFIG_HOME": filepath.Join(root, "config"), "XDG_DATA_HOME": filepath.Join(root, "xdgdata"),
		"XDG_CACHE_HOME": filepath.Join(root, "cache"), "SCOPECTL_DATA_DIR": e.dataDir, "SCOPE_LORA_DIR": e.scopeDir,
	} {
		t.Setenv(k, v)
	}
	for _, k := range []string{"DAYDREAM_SCOPE_LORA_DIR", "DAYDREAM_SCOPE_MODELS_DIR", "HF_TOKEN", "CIVITAI_API_KEY", "CIVITAI_TOKEN", "RUNPOD_API_KEY", "CROC_SECRET", "SCOPECTL_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	wd := filepath.Join(root, "work")
	os.MkdirAll(wd, 0o755)
	t.Chdir(wd)
	return e
}

// run executes scopectl in-process and returns stdout, stderr and the exit code.
func (e *env) run(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := cli.Main(args, &out, &errb)
	return out.String(), errb.String(), code
}

func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	out, errs, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("scopectl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func (e *env) lora(name string, s loratest.Spec) string {
	e.t.Helper()
	p := filepath.Join(e.root, name)
	if err := loratest.Write(p, s); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, s)
	}
	return v
}

func TestVersion(t *testing.T) {
	e := newEnv(t)
	v := decode[map[string]any](t, e.mustRun("version", "--json"))
	if v["version"] == "" || v["go"] == "" {
		t.Fatal(v)
	}
	if out := e.mustRun("completion", "bash"); !strings.Contains(out, "scopectl") {
		t.Fatal("no completion script")
	}
}

func TestInspectJSONContract(t *testing.T) {
	e := newEnv(t)
	p := e.lora("k.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Kohya, Alpha: 2, Rank: 4})
	reps := decode[[]map[string]any](t, e.mustRun("lora", "inspect", "--json", p))
	for _, f := range []string{"path", "kind", "family", "base", "base_reason", "rank", "alpha", "alpha_source", "targets", "target_modules", "layers", "dtype", "tensors", "params", "bytes", "sha256", "metadata", "unusual", "problems", "scope_ready"} {
		if _, ok := reps[0][f]; !ok {
			t.Errorf("inspect --json lacks %q", f)
		}
	}
	if reps[0]["family"] != "kohya" || reps[0]["base"] != lora.BaseT2V1_3B || reps[0]["alpha"] != 2.0 {
		t.Fatal(reps[0])
	}
	if out := e.mustRun("lora", "inspect", "--no-hash", p); !strings.Contains(out, "wan2.1-t2v-1.3b") || strings.Contains(out, "sha256:") {
		t.Fatal(out)
	}
}

func TestBadInputIsOneLineError(t *testing.T) {
	e := newEnv(t)
	junk := filepath.Join(e.root, "junk.safetensors")
	os.WriteFile(junk, []byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"), 0o644)
	pickle := filepath.Join(e.root, "model.ckpt")
	os.WriteFile(pickle, append([]byte{0x80, 0x02}, bytes.Repeat([]byte{'x'}, 64)...), 0o644)
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"lora", "inspect", junk}, "junk.safetensors", 1},
		{[]string{"lora", "inspect", pickle}, "pickle can run code", 1},
		{[]string{"lora", "add", pickle}, "model.ckpt", 1},
		{[]string{"lora", "inspect", filepath.Join(e.root, "missing.safetensors")}, "missing.safetensors", 4},
		{[]string{"lora", "convert", junk, "--to", "nope", "-o", "x"}, "--to", 2},
		{[]string{"lora", "ls", "--bogus"}, "bogus", 2},
		{[]string{"lora", "show", "nothing-here"}, "nothing-here", 4},
		{[]string{"lora", "install", "x", "--pipeline", "nope"}, "longlive", 2},
	} {
		out, errs, code := e.run(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q (stdout %q)", tc.args, code, errs, out)
		}
		if strings.Count(strings.TrimSpace(errs), "\n") > 0 || strings.Contains(errs, "panic") {
			t.Errorf("%v: not a one-line error: %q", tc.args, errs)
		}
	}
	// With --json the error is a JSON object on stderr.
	_, errs, code := e.run("lora", "show", "nothing-here", "--json")
	if v := decode[map[string]any](t, errs); code != 4 || v["exit_code"] != 4.0 {
		t.Fatalf("%d %v", code, v)
	}
}

func TestLibraryWorkflow(t *testing.T) {
	e := newEnv(t)
	big := e.lora("toolkit.safetensors", loratest.Spec{Base: lora.BaseT2V14B})
	small := e.lora("small.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Diffusers, Alpha: 8, Rank: 4})
	add := decode[map[string]any](t, e.mustRun("lora", "add", "--json", big, small))
	if res := add["results"].([]any); len(res) != 2 {
		t.Fatal(add)
	}
	again := decode[map[string]any](t, e.mustRun("lora", "add", "--json", big))
	if st := again["results"].([]any)[0].(map[string]any)["status"]; st != "exists" {
		t.Fatal(again)
	}
	ls := decode[[]map[string]any](t, e.mustRun("lora", "ls", "--json", "--base", lora.BaseT2V1_3B))
	if len(ls) != 1 || ls[0]["name"] != "small" || ls[0]["family"] != "diffusers" {
		t.Fatal(ls)
	}
	sha := ls[0]["sha256"].(string)
	show := decode[map[string]any](t, e.mustRun("lora", "show", "--json", sha[:10]))
	if show["lora"].(map[string]any)["name"] != "small" {
		t.Fatal(show)
	}
	// Base gate: a 1.3B LoRA does not go into a 14B pipeline.
	_, errs, code := e.run("lora", "install", "small", "--pipeline", "krea-realtime-video")
	if code != 3 || !strings.Contains(errs, "--force") {
		t.Fatalf("gate: %d %s", code, errs)
	}
	inst := decode[map[string]any](t, e.mustRun("lora", "install", "--json", "small", "--pipeline", "longlive"))
	r := inst["results"].([]any)[0].(map[string]any)
	if r["form"] != "bare+alpha" || r["status"] != "installed" {
		t.Fatal(r)
	}
	installed := filepath.Join(e.scopeDir, "small.safetensors")
	rep := decode[[]map[string]any](t, e.mustRun("lora", "inspect", "--json", installed))
	if rep[0]["scope_ready"] != true {
		t.Fatalf("installed file not scope-ready: %v", rep[0]["scope_issues"])
	}
	man, err := os.ReadFile(filepath.Join(e.scopeDir, "lora_manifest.json"))
	if err != nil || !strings.Contains(string(man), `"small.safetensors"`) || !strings.Contains(string(man), r["sha256"].(string)) {
		t.Fatalf("manifest: %v %s", err, man)
	}
	e.mustRun("lora", "install", "toolkit", "--pipeline", "krea-realtime-video")
	// Verify, then damage a library file: exit 1.
	e.mustRun("lora", "verify")
	blob := ls[0]["path"].(string)
	os.Chmod(blob, 0o644)
	f, _ := os.OpenFile(blob, os.O_WRONLY, 0)
	f.WriteAt([]byte("zz"), 100)
	f.Close()
	out, _, code := e.run("lora", "verify")
	if code != 1 || !strings.Contains(out, "corrupt") {
		t.Fatalf("verify: %d %s", code, out)
	}
	e.mustRun("lora", "uninstall", "small")
	if _, err := os.Stat(installed); !os.IsNotExist(err) {
		t.Fatal("uninstall left the file")
	}
	if _, _, code := e.run("lora", "uninstall", "small"); code != 4 {
		t.Fatalf("second uninstall exit %d", code)
	}
	e.mustRun("lora", "rm", "small")
	if _, _, code := e.run("lora", "show", "small"); code != 4 {
		t.Fatal("rm did not remove")
	}
	// Scan indexes Scope's dir in place (the installed toolkit file is the same content).
	scan := decode[map[string]any](t, e.mustRun("lora", "scan", "--json"))
	if len(scan["library"].([]any)) != 1 {
		t.Fatal(scan)
	}
}

func TestConvertCLI(t *testing.T) {
	e := newEnv(t)
	src := e.lora("k.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Kohya, Alpha: 2, Rank: 4, Blocks: []int{0}})
	out := filepath.Join(e.root, "d.safetensors")
	res := decode[map[string]any](t, e.mustRun("lora", "convert", src, "--to", "diffusers", "-o", out, "--json"))
	if res["to"] != "diffusers" || res["alpha"] != "metadata" {
		t.Fatal(res)
	}
	if _, _, code := e.run("lora", "convert", src, "--to", "kohya", "-o", out); code != 3 {
		t.Fatalf("overwrite without --force: exit %d", code)
	}
	if _, _, code := e.run("lora", "convert", src, "--to", "kohya", "-o", src, "--force"); code != 2 {
		t.Fatalf("in place: exit %d", code)
	}
	e.mustRun("lora", "convert", out, "--to", "kohya", "-o", out+".k.safetensors")
}

func TestSecretsScanCLI(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.root, "proj")
	os.MkdirAll(dir, 0o755)
	token := "hf_" + strings.Repeat("Zq9x", 9)
	os.WriteFile(filepath.Join(dir, "deploy.sh"), []byte("#!/bin/sh\nexport HF_TOKEN="+token+"\n"), 0o644)
	out, _, code := e.run("secrets", "scan", dir)
	if code != 1 || !strings.Contains(out, "deploy.sh:2") || strings.Contains(out, token) {
		t.Fatalf("%d %s", code, out)
	}
	clean := filepath.Join(e.root, "clean")
	os.MkdirAll(clean, 0o755)
	if _, _, code := e.run("secrets", "scan", clean); code != 0 {
		t.Fatal(code)
	}
}

// TestCanariesNeverPrinted sets every secret scopectl knows to a canary, from the
// environment and from .env, runs commands on success and error paths with and without
// --json and -v, and requires that no canary appears in any output.
func TestCanariesNeverPrinted(t *testing.T) {
	e := newEnv(t)
	canaries := map[string]string{
		"HF_TOKEN":              "hf_CANARYcanaryCANARYcanaryCANARY0001",
		"CIVITAI_API_KEY":       "0123456789abcdef0123456789abcdef",
		"RUNPOD_API_KEY":        "rpa_CANARYCANARYCANARYCANARYCANARYCANARY01",
		"AWS_ACCESS_KEY_ID":     "AKIACANARYCANARY0001",
		"AWS_SECRET_ACCESS_KEY": "canarySecretCanarySecretCanarySecret0001",
	}
	for k, v := range canaries {
		t.Setenv(k, v)
	}
	croc := "canary-croc-code-phrase-0001"
	os.WriteFile(".env", []byte("CROC_SECRET="+croc+"\n"), 0o600)
	p := e.lora("x.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Blocks: []int{0}})
	scanDir := filepath.Join(e.root, "leaky")
	os.MkdirAll(scanDir, 0o755)
	os.WriteFile(filepath.Join(scanDir, "notes.env.sh"), []byte("HF_TOKEN="+canaries["HF_TOKEN"]+"\nCROC_SECRET="+croc+"\n"), 0o644)
	var all strings.Builder
	for _, args := range [][]string{
		{"config", "show"}, {"config", "show", "--json"}, {"config", "keys", "--json"},
		{"lora", "inspect", p, "-v"}, {"lora", "add", p, "--json", "-v"}, {"lora", "ls", "--json"},
		{"lora", "install", "x", "--pipeline", "krea-realtime-video", "-v"},
		{"lora", "inspect", filepath.Join(e.root, canaries["HF_TOKEN"]+".safetensors")},
		{"lora", "inspect", filepath.Join(e.root, canaries["HF_TOKEN"]+".safetensors"), "--json"},
		{"secrets", "scan", scanDir}, {"secrets", "scan", scanDir, "--json"}, {"version", "--json"},
		{"deploy", "--new", "--gpu", "NVIDIA RTX A6000", "--dry-run", "--json", "-v"},
		{"deploy", "--new", "--gpu", "NVIDIA RTX A6000", "--scope-lora-dir", "/opt/lora"},
	} {
		out, errs, _ := e.run(args...)
		all.WriteString(out + errs)
	}
	text := all.String()
	if !strings.Contains(text, "hf_…") {
		t.Fatal("redacted form of HF_TOKEN not shown at all (config show should show it)")
	}
	for name, v := range canaries {
		if strings.Contains(text, v) {
			t.Errorf("%s canary leaked", name)
		}
	}
	if strings.Contains(text, croc) {
		t.Error("CROC_SECRET canary leaked")
	}
}

// buildBinary builds scopectl once per test process (testkit keeps the real Go caches).
func buildBinary(t *testing.T) string {
	t.Helper()
	return testkit.Scopectl(t)
}

func TestMain(m *testing.M) { kubetest.Main(m) } // testkit.Main, and the control plane of kube_test.go stopped

// TestBuiltBinary runs the real binary, as users do.
func TestBuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	e := newEnv(t)
	bin := buildBinary(t)
	p := e.lora("a.safetensors", loratest.Spec{Base: lora.BaseI2V14B, Family: lora.Kohya, Alpha: 4, Rank: 8, Blocks: []int{0, 39}})
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	if out, code := run("lora", "inspect", p); code != 0 || !strings.Contains(out, "wan2.1-i2v-14b") || !strings.Contains(out, "k.img") {
		t.Fatalf("%d %s", code, out)
	}
	if out, code := run("lora", "add", p); code != 0 || !strings.Contains(out, "added") {
		t.Fatalf("%d %s", code, out)
	}
	if out, code := run("lora", "install", "a"); code != 0 || !strings.Contains(out, "bare+alpha") {
		t.Fatalf("%d %s", code, out)
	}
	if out, code := run("lora", "nope"); code == 0 {
		t.Fatalf("unknown command succeeded: %s", out)
	}
}

func TestSyncAndPullCLI(t *testing.T) {
	e := newEnv(t)
	p := e.lora("a.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Kohya, Alpha: 2, Rank: 4})
	e.mustRun("lora", "add", p)
	target := filepath.Join(e.root, "pod-lora")
	plan := decode[map[string]any](t, e.mustRun("sync", "a", "--to", target, "--dry-run", "--json"))
	if plan["dry_run"] != true || len(plan["actions"].([]any)) != 1 {
		t.Fatal(plan)
	}
	first := decode[map[string]any](t, e.mustRun("sync", "--all", "--to", "file://"+target, "--json"))
	if first["sent_bytes"].(float64) == 0 {
		t.Fatal(first)
	}
	second := decode[map[string]any](t, e.mustRun("sync", "--all", "--to", target, "--json"))
	if second["sent_bytes"].(float64) != 0 {
		t.Fatalf("nothing changed but %v bytes sent", second["sent_bytes"])
	}
	if _, _, code := e.run("sync", "a", "--to", target, "--pipeline", "krea-realtime-video"); code != 3 {
		t.Fatalf("gate exit %d", code)
	}
	if _, errs, code := e.run("sync", "a", "--to", "gopher://x/y"); code != 1 || !strings.Contains(errs, "unknown scheme") {
		t.Fatalf("%d %s", code, errs)
	}
	// Pull a trained checkpoint from a "remote" into a fresh library.
	t.Setenv("SCOPECTL_DATA_DIR", filepath.Join(e.root, "data2"))
	pulled := decode[map[string]any](t, e.mustRun("pull", "file://"+filepath.Join(target, "a.safetensors"), "--name", "from-pod", "--json"))
	l := pulled["results"].([]any)[0].(map[string]any)["lora"].(map[string]any)
	if l["name"] != "from-pod" || l["origins"].([]any)[0].(map[string]any)["kind"] != "remote" {
		t.Fatal(l)
	}
	if _, _, code := e.run("pull", "file://"+filepath.Join(target, "..", "etc")); code == 0 {
		t.Fatal("pulled a non-LoRA")
	}
	// Samples (ai-toolkit's images of a LoRA at work) enter the library too, tied to the
	// LoRA --lora names, with where they came from; other files are refused.
	samples := filepath.Join(e.root, "pod", "samples")
	os.MkdirAll(samples, 0o755)
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{7}, 5000)...)
	os.WriteFile(filepath.Join(samples, "1732_000001000_0.png"), png, 0o644)
	os.WriteFile(filepath.Join(samples, "notes.txt"), []byte("x"), 0o644)
	got := decode[map[string]any](t, e.mustRun("pull", "file://"+filepath.Join(samples, "1732_000001000_0.png"), "--lora", "from-pod", "--json"))
	sm := got["samples"].([]any)[0].(map[string]any)
	if sm["name"] != "1732_000001000_0.png" || sm["size"].(float64) != float64(len(png)) || !strings.Contains(sm["origin"].(string), "samples") {
		t.Fatalf("pulled sample: %v", sm)
	}
	if b, err := os.ReadFile(sm["path"].(string)); err != nil || !bytes.Equal(b, png) {
		t.Fatalf("the sample in the library: %v", err)
	}
	show := decode[map[string]any](t, e.mustRun("lora", "show", "from-pod", "--json"))
	if ss := show["samples"].([]any); len(ss) != 1 || ss[0].(map[string]any)["sha256"] != sm["sha256"] {
		t.Fatalf("lora show samples: %v", show["samples"])
	}
	if _, errs, code := e.run("pull", "file://"+filepath.Join(samples, "notes.txt")); code != 2 || !strings.Contains(errs, "samples") {
		t.Fatalf("pull of a .txt: %d %q", code, errs)
	}
	if _, errs, code := e.run("pull", "file://"+filepath.Join(samples, "1732_000001000_0.png"), "--lora", "nosuch"); code != 4 {
		t.Fatalf("--lora of a missing LoRA: %d %q", code, errs)
	}
}
