package cli_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// TestAgentInstallOverSSH copies the binary to a "pod" (a real sshd on loopback), starts
// the agent there, syncs through it, and checks the token never shows in a process list.
func TestAgentInstallOverSSH(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	e := newEnv(t)
	bin := buildBinary(t)
	port := startSSHD(t, e.root) // HOME is e.root
	t.Setenv("SSH_AUTH_SOCK", "")
	token := "install-canary-token-0123456789abcdef"
	t.Setenv("SCOPECTL_AGENT_TOKEN", token)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	agentAddr := l.Addr().String()
	l.Close()
	binDir := filepath.Join(e.root, "pod", "bin")
	podLora := filepath.Join(e.root, "pod", "lora")
	user := os.Getenv("USER")
	if user == "" {
		user = "root"
	}
	url := fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", user, port, binDir)
	out := e.mustRunBin(bin, "agent", "install", url, "--binary", bin, "--pod-lora-dir", podLora, "--listen", agentAddr, "--json")
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.PID == 0 {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { syscall.Kill(info.PID, syscall.SIGTERM) })
	if fi, err := os.Stat(binDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("bin dir: %v %v", err, fi.Mode())
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", info.PID))
	if strings.Contains(string(cmdline), token) || !strings.Contains(string(cmdline), "agent") {
		t.Fatalf("agent command line: %q", cmdline)
	}
	p := e.lora("a.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	e.mustRun("lora", "add", p)
	e.mustRunBin(bin, "sync", "--all", "--to", "http://"+agentAddr)
	if _, err := os.Stat(filepath.Join(podLora, "a.safetensors")); err != nil {
		t.Fatal("LoRA did not arrive through the installed agent")
	}
	// Installing again replaces the running agent.
	out = e.mustRunBin(bin, "agent", "install", url, "--binary", bin, "--pod-lora-dir", podLora, "--listen", agentAddr, "--json")
	var again struct {
		PID int `json:"pid"`
	}
	json.Unmarshal([]byte(out), &again)
	t.Cleanup(func() { syscall.Kill(again.PID, syscall.SIGTERM) })
	if again.PID == 0 || again.PID == info.PID {
		t.Fatalf("reinstall: %s", out)
	}
	if err := syscall.Kill(info.PID, 0); err == nil {
		t.Fatal("the old agent still runs")
	}
}
