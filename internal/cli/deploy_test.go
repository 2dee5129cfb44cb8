package cli_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// TestDeployOverSSH deploys a Scope stand-in image (FROM scratch, built here) on "a GPU
// host": this machine's Docker engine, reached through a real sshd. It syncs a LoRA,
// waits for health, loads a pipeline, then checks that a second deploy changes nothing.
func TestDeployOverSSH(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and an image")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("docker engine not usable: %v %s", err, out)
	}
	e := newEnv(t)
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "scopestub"), "./internal/scope/scopestub")
	build.Dir, build.Env = moduleRoot, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY scopestub /scopestub\nENTRYPOINT [\"/scopestub\",\"--host\",\"0.0.0.0\",\"--port\",\"8000\",\"--load-delay\",\"300ms\"]\n"), 0o644)
	img := fmt.Sprintf("scopectl-cli-test-scope:%d", time.Now().UnixNano())
	if out, err := exec.CommandContext(ctx, "docker", "build", "--quiet", "--tag", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v %s", err, out)
	}
	name := fmt.Sprintf("scopectl-cli-test-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		exec.Command("docker", "rm", "--force", name).Run()
		exec.Command("docker", "image", "rm", "--force", img).Run()
	})
	port := startSSHD(t, e.root)
	t.Setenv("SSH_AUTH_SOCK", "")
	p := e.lora("style.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	e.mustRun("lora", "add", p)
	vol := filepath.Join(e.root, "workspace")
	scopePort := fmt.Sprint(freePortCLI(t))
	host := fmt.Sprintf("ssh://root@127.0.0.1:%d/", port)
	args := []string{"deploy", "--host", host, "--image", img, "--name", name, "--pull", "never", "--gpus=false",
		"--volume", vol, "--port", scopePort, "--lora", "style:0.8", "--pipeline", "longlive", "--wait", "60s", "--json"}
	out := e.mustRunBin(bin, args...)
	if !strings.Contains(out, `"status": "loaded"`) || !strings.Contains(out, `"action": "create"`) {
		t.Fatalf("deploy: %s", out)
	}
	if _, err := os.Stat(filepath.Join(vol, "models", "lora", "style.safetensors")); err != nil {
		t.Fatal("LoRA not synced into the volume")
	}
	again := e.mustRunBin(bin, args...)
	if !strings.Contains(again, `"action": "keep"`) || strings.Contains(again, `"action": "replace"`) {
		t.Fatalf("second deploy changed something: %s", again)
	}
	plan := e.mustRunBin(bin, "deploy", "--host", host, "--image", img, "--name", name, "--pull", "never", "--gpus=false",
		"--volume", vol, "--port", scopePort, "--env", "FOO=bar", "--dry-run", "--json")
	if !strings.Contains(plan, `"action": "replace"`) {
		t.Fatalf("plan after a setting change: %s", plan)
	}
}

func freePortCLI(t *testing.T) int {
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*netTCPAddr).Port
}

type netTCPAddr = net.TCPAddr

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
