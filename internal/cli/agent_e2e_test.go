package cli_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// TestSyncThroughAgent runs the real binary on both sides: `scopectl agent` serving a
// folder, and `scopectl sync --to http://…` sending to it with the token in the
// environment only.
func TestSyncThroughAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	e := newEnv(t)
	bin := buildBinary(t)
	token := "agent-canary-token-0123456789abcdef"
	t.Setenv("SCOPECTL_AGENT_TOKEN", token)
	podDir := filepath.Join(e.root, "pod-lora")
	agent := exec.Command(bin, "agent", "--dir", podDir, "--listen", "127.0.0.1:0", "--json")
	stdout, _ := agent.StdoutPipe()
	var agentErr strings.Builder
	agent.Stderr = &agentErr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var doc strings.Builder
		for sc.Scan() { // the --json document is indented: collect until it closes
			doc.WriteString(sc.Text())
			if sc.Text() == "}" {
				lines <- doc.String()
				return
			}
		}
	}()
	var info struct{ Listen string }
	select {
	case l := <-lines:
		if err := json.Unmarshal([]byte(l), &info); err != nil {
			t.Fatalf("agent said %q: %v", l, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("agent did not start: %s", agentErr.String())
	}
	p := e.lora("a.safetensors", loratest.Spec{Base: lora.BaseT2V14B, Family: lora.Diffusers, Alpha: 2})
	e.mustRun("lora", "add", p)
	url := "http://" + info.Listen
	first := e.mustRunBin(bin, "sync", "--all", "--to", url, "--json")
	if !strings.Contains(first, `"op": "put"`) || strings.Contains(first, `"sent_bytes": 0`) {
		t.Fatal(first)
	}
	rep, err := lora.Inspect(filepath.Join(podDir, "a.safetensors"), lora.InspectOptions{})
	if err != nil || !rep.ScopeReady {
		t.Fatalf("file on the pod: %v %v", err, rep)
	}
	if _, err := os.Stat(filepath.Join(podDir, "lora_manifest.json")); err != nil {
		t.Fatal("no manifest on the pod")
	}
	second := e.mustRunBin(bin, "sync", "--all", "--to", url, "--json")
	if !strings.Contains(second, `"sent_bytes": 0`) {
		t.Fatalf("second sync sent data: %s", second)
	}
	// A wrong token is refused with a clear error that does not print either token.
	cmd := exec.Command(bin, "sync", "--all", "--to", url)
	cmd.Env = append(os.Environ(), "SCOPECTL_AGENT_TOKEN=wrong-token-wrong-token-wrong")
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Contains(string(out), token) || strings.Contains(string(out), "wrong-token-wrong-token-wrong") {
		t.Fatalf("wrong token: %v %s", err, out)
	}
	if strings.Contains(agentErr.String(), token) {
		t.Fatal("agent logged the token")
	}
}
