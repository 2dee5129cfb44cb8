package cli_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/cli"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// allCommands lists every command of the tree, cobra's help and completion included,
// with the words that invoke it.
func allCommands() map[string]*cobra.Command {
	out := map[string]*cobra.Command{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if strings.HasPrefix(c.Name(), "__") { // cobra's hidden completion requests
			return
		}
		out[strings.TrimPrefix(strings.TrimPrefix(c.CommandPath(), "scopectl"), " ")] = c
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cli.CommandTree())
	return out
}

// checkUsageError requires exit 2 and a one-line "scopectl CMD: …" error naming want in
// text, and the same as one JSON error object on stderr (stdout empty) with --json.
func checkUsageError(t *testing.T, e *env, name string, args []string, want string) {
	t.Helper()
	prefix := "scopectl: "
	if name != "" {
		prefix = "scopectl " + name + ": "
	}
	out, errs, code := e.run(args...)
	if code != 2 || !strings.HasPrefix(errs, prefix) || !strings.Contains(errs, want) || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
		t.Errorf("scopectl %s: exit %d, stderr %q (want exit 2, %q…%q on one line); stdout %q", strings.Join(args, " "), code, errs, prefix, want, out)
	}
	out, errs, code = e.run(append(args, "--json")...)
	if code != 2 || out != "" {
		t.Errorf("scopectl %s --json: exit %d, stdout %q", strings.Join(args, " "), code, out)
		return
	}
	v := decode[map[string]any](t, errs)
	if v["exit_code"] != 2.0 || v["command"] != name || !strings.Contains(v["error"].(string), want) {
		t.Errorf("scopectl %s --json: stderr %v", strings.Join(args, " "), v)
	}
}

// TestEveryCommandFollowsTheUsageRules walks the whole command tree: an unknown flag, a
// wrong number of arguments and an unknown subcommand are usage errors (exit 2) named by
// the command, in text and as a JSON error object with --json.
func TestEveryCommandFollowsTheUsageRules(t *testing.T) {
	e := newEnv(t)
	cmds := allCommands()
	if len(cmds) < 40 {
		t.Fatalf("only %d commands found", len(cmds))
	}
	for name, c := range cmds {
		words := strings.Fields(name)
		if c.DisableFlagParsing {
			continue
		}
		if name != "help" {
			checkUsageError(t, e, name, append(words, "--no-such-flag-zz"), "no-such-flag-zz")
		}
		if c.HasSubCommands() {
			checkUsageError(t, e, name, append(words, "nosuchsubcommand"), `"nosuchsubcommand"`)
			continue
		}
		if c.Args == nil {
			continue
		}
		for _, args := range [][]string{nil, strings.Fields("a1 a2 a3 a4 a5 a6 a7 a8 a9 a10 a11 a12")} {
			if c.Args(c, args) == nil {
				continue // a count this command accepts: running it would do real work
			}
			checkUsageError(t, e, name, append(append([]string{}, words...), args...), "usage: scopectl "+name)
		}
	}
}

func TestUnknownCommandIsUsage(t *testing.T) {
	e := newEnv(t)
	checkUsageError(t, e, "", []string{"lorra"}, `unknown command "lorra"`)
	if _, errs, _ := e.run("lorra"); !strings.Contains(errs, "did you mean lora?") {
		t.Errorf("no suggestion: %q", errs)
	}
	checkUsageError(t, e, "lora inspect", []string{"lora", "inspect"}, "requires at least 1 arg(s)")
	checkUsageError(t, e, "lora ls", []string{"lora", "ls", "--base", "wan2.1-t2v-13b"}, "wan2.1-t2v-1.3b")
	checkUsageError(t, e, "lora ls", []string{"lora", "ls", "--family", "lycoris"}, "kohya")
	// --json before the command counts too.
	if _, errs, code := e.run("--json", "lorra"); code != 2 || !strings.HasPrefix(errs, "{") {
		t.Errorf("--json lorra: %d %q", code, errs)
	}
}

func TestMissingFileIsNotFound(t *testing.T) {
	e := newEnv(t)
	missing := filepath.Join(e.root, "missing.safetensors")
	for _, args := range [][]string{
		{"lora", "inspect", missing}, {"lora", "inspect", "--json", missing}, {"lora", "add", missing},
		{"lora", "convert", missing, "--to", "kohya", "-o", filepath.Join(e.root, "o.safetensors")},
		{"lora", "convert", "no-such-entry", "--to", "kohya", "-o", filepath.Join(e.root, "o.safetensors")},
	} {
		if _, errs, code := e.run(args...); code != 4 || !strings.Contains(errs, "missing") && !strings.Contains(errs, "no-such-entry") {
			t.Errorf("%v: exit %d %q", args, code, errs)
		}
	}
	// An empty folder: nothing to add is said, and is not success.
	empty := filepath.Join(e.root, "empty")
	os.MkdirAll(empty, 0o755)
	if out, errs, code := e.run("lora", "add", empty); code != 4 || !strings.Contains(errs, "no .safetensors files found in "+empty) {
		t.Errorf("add of an empty dir: exit %d %q %q", code, out, errs)
	}
}

// TestDotEnvWarning: a .env holding a secret with mode 0644 is warned about once, in
// scopectl's own format, on stderr only; --json stdout stays pure JSON.
func TestDotEnvWarning(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(".env", []byte("HF_TOKEN=hf_"+strings.Repeat("Ab1", 12)+"\n"), 0o644)
	out, errs, code := e.run("version")
	if code != 0 || !strings.HasPrefix(errs, "scopectl: warning: ") || !strings.Contains(errs, ".env holds secrets (HF_TOKEN) but has mode 0644") || strings.Count(errs, "\n") != 1 || strings.Contains(errs, "level=") {
		t.Fatalf("version: %d %q %q", code, out, errs)
	}
	out, errs, code = e.run("version", "--json")
	if code != 0 || strings.Count(errs, "\n") != 1 {
		t.Fatalf("version --json: %d %q", code, errs)
	}
	decode[map[string]any](t, out)
	if ev := decode[map[string]any](t, errs); ev["event"] != "warning" || !strings.Contains(ev["message"].(string), "chmod 600") {
		t.Fatalf("warning event: %v", ev)
	}
}

func TestMessagesSayWhatHappened(t *testing.T) {
	e := newEnv(t)
	text := filepath.Join(e.root, "notes.safetensors")
	os.WriteFile(text, []byte("hello, this is a text file and no LoRA at all\n"), 0o644)
	if _, errs, code := e.run("lora", "inspect", text); code != 1 || !strings.Contains(errs, "not a safetensors file") || strings.Contains(errs, "exceeds the maximum") {
		t.Errorf("text file: %d %q", code, errs)
	}
	if _, errs, code := e.run("lora", "inspect", "."); code != 1 || !strings.Contains(errs, "is a directory") || strings.Contains(errs, "read .") {
		t.Errorf("directory: %d %q", code, errs)
	}

	// A library name converts; the result is one dtype with --fold-alpha.
	p := e.lora("k.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B, Family: lora.Kohya, Alpha: 2, Rank: 4, Blocks: []int{0}})
	if out := e.mustRun("lora", "add", p); !strings.Contains(out, "added") {
		t.Fatal(out)
	}
	if out := e.mustRun("lora", "add", p); !strings.Contains(out, "already in the library") || strings.Contains(out, "(none)") {
		t.Errorf("add again: %q", out)
	}
	folded := filepath.Join(e.root, "folded.safetensors")
	e.mustRun("lora", "convert", "k", "--to", "comfy", "--fold-alpha", "-o", folded)
	rep := decode[[]map[string]any](t, e.mustRun("lora", "inspect", "--json", folded))
	if rep[0]["dtype"] != "F32" || len(rep[0]["unusual"].([]any)) != 0 {
		t.Errorf("fold-alpha output: dtype %v unusual %v", rep[0]["dtype"], rep[0]["unusual"])
	}

	// Counts are in the right number.
	dir := filepath.Join(e.root, "one")
	os.MkdirAll(dir, 0o755)
	os.Link(p, filepath.Join(dir, "k.safetensors"))
	if out := e.mustRun("lora", "scan", dir); !strings.Contains(out, ": 1 LoRA\n") || strings.Contains(out, "1 LoRAs") {
		t.Errorf("scan: %q", out)
	}

	// A dry run says what it would send.
	out := e.mustRun("sync", "k", "--to", filepath.Join(e.root, "remote"), "--dry-run")
	if !strings.Contains(out, "would send 1 (") || strings.Contains(out, "sent (0 B)") {
		t.Errorf("dry run: %q", out)
	}

	if out := e.mustRun("config", "keys"); strings.Contains(out, "[") || !strings.Contains(out, "HF_TOKEN") {
		t.Errorf("config keys prints Go slices: %q", out)
	}

	// Nothing listening: Scope is not running there, and how to point elsewhere.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()
	if _, errs, code := e.run("logs", "--scope", dead); code != 1 || !strings.Contains(errs, "Scope is not running at "+dead) || !strings.Contains(errs, "SCOPE_URL") {
		t.Errorf("logs: %d %q", code, errs)
	}

	// A .env tracked by git is a whole-file finding, printed as such.
	if _, err := exec.LookPath("git"); err == nil {
		repo := filepath.Join(e.root, "repo")
		os.MkdirAll(repo, 0o755)
		os.WriteFile(filepath.Join(repo, ".env"), []byte("X=1\n"), 0o600)
		for _, args := range [][]string{{"init", "-q"}, {"add", ".env"}} {
			if b, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("git %v: %v %s", args, err, b)
			}
		}
		out, _, code := e.run("secrets", "scan", repo)
		if code != 1 || !strings.Contains(out, ".env: env-file-tracked-by-git (the whole file)") || strings.Contains(out, ":0:") || !strings.Contains(out, "1 possible secret found") {
			t.Errorf("secrets scan of a tracked .env: %d %q", code, out)
		}
	}
}
