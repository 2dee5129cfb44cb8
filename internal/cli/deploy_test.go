package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// TestDeployOverSSH deploys a Scope stand-in image on "a GPU host": this machine's Docker
// engine, reached through a real sshd, pulling the image from a local registry. It syncs
// a LoRA, waits for health, loads a pipeline; then a second deploy changes nothing, one
// changed setting replaces the container, a killed container is started again, a new
// image under the same tag is pulled and replaces it, and a missing tag fails on one line
// without leaving a container.
func TestDeployOverSSH(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and an image")
	}
	reg := deploytest.StartRegistry(t)
	e := newEnv(t)
	bin := buildBinary(t)
	tag := "t" + deploytest.RandHex(4)
	stub := deploytest.Image{Tag: tag, Args: []string{"--load-delay", "300ms"}}
	img := reg.Push(stub)
	name := "scopectl-cli-test-" + deploytest.RandHex(5)
	deploytest.RemoveContainerAtEnd(t, name)
	// The host's sessions find a fake nvidia-smi printing real recorded H100 output.
	port := startSSHDWith(t, e.root, "SetEnv PATH="+sessionPath(fakeNvidiaSMI(t))+"\n")
	t.Setenv("SSH_AUTH_SOCK", "")
	p := e.lora("style.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	e.mustRun("lora", "add", p)
	vol := filepath.Join(e.root, "workspace")
	scopePort := fmt.Sprint(deploytest.FreePort(t))
	host := fmt.Sprintf("ssh://"+testkit.User()+"@127.0.0.1:%d/", port)
	args := []string{"deploy", "--host", host, "--image", img, "--name", name, "--gpus=false",
		"--volume", vol, "--port", scopePort, "--lora", "style:0.8", "--pipeline", "longlive", "--wait", "60s", "--json"}
	out := e.mustRunBin(bin, args...)
	if !strings.Contains(out, `"status": "loaded"`) || !strings.Contains(out, `"action": "pull"`) || !strings.Contains(out, `"action": "create"`) {
		t.Fatalf("deploy: %s", out)
	}
	if _, err := os.Stat(filepath.Join(vol, "models", "lora", "style.safetensors")); err != nil {
		t.Fatal("LoRA not synced into the volume")
	}
	// status reads the host: container, Scope, pipeline, LoRAs vs library, GPU.
	v := decode[statusJSON](t, e.mustRun("status", host, "--name", name, "--json"))
	if c := v.Container; c == nil || !c.Exists || !c.Running || !c.Managed || c.Status != "running" || c.Image != img {
		t.Fatalf("status container: %+v", v.Container)
	}
	if v.Scope != "http://127.0.0.1:"+scopePort || !v.Healthy || v.Pipeline == nil || v.Pipeline.Status != "loaded" || v.Pipeline.PipelineID != "longlive" ||
		len(v.Pipeline.LoadedLoRAs) != 1 || v.Pipeline.LoadedLoRAs[0].Path != "/workspace/models/lora/style.safetensors" || v.Pipeline.LoadedLoRAs[0].Scale != 0.8 {
		t.Fatalf("status scope: %+v %+v", v, v.Pipeline)
	}
	if len(v.Installed) != 1 || !v.Installed[0].InLibrary || v.Installed[0].LibraryName != "style" || len(v.Errors) != 0 {
		t.Fatalf("status installed: %+v errors %v", v.Installed, v.Errors)
	}
	checkRecordedGPU(t, v)
	// logs reads the container's output through docker logs over SSH: the stand-in logs
	// the pipeline load there.
	lg := decode[struct{ Lines []string }](t, e.mustRun("logs", host, "--name", name, "-n", "20", "--json"))
	if !strings.Contains(strings.Join(lg.Lines, "\n"), "longlive") {
		t.Fatalf("logs over SSH: %q", lg.Lines)
	}
	if _, errs, code := e.run("logs", host, "--name", "no-such-container"); code == 0 || !strings.Contains(errs, "no-such-container") {
		t.Fatalf("logs of a missing container: %d %q", code, errs)
	}
	// Twice: nothing changes.
	again := e.mustRunBin(bin, args...)
	if !strings.Contains(again, `"action": "keep"`) || strings.Contains(again, `"action": "replace"`) || strings.Contains(again, `"action": "pull"`) {
		t.Fatalf("second deploy changed something: %s", again)
	}
	// One setting changed: the plan says replace, applying it changes that setting.
	withEnv := append(append([]string(nil), args...), "--env", "FOO=bar")
	plan := e.mustRunBin(bin, append(withEnv, "--dry-run")...)
	if !strings.Contains(plan, `"action": "replace"`) {
		t.Fatalf("plan after a setting change: %s", plan)
	}
	if out := e.mustRunBin(bin, withEnv...); !strings.Contains(out, `"action": "replace"`) || !strings.Contains(out, `"status": "loaded"`) {
		t.Fatalf("deploy after a setting change: %s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if env, _ := deploytest.Docker(ctx, "inspect", "--format", "{{json .Config.Env}}", name); !strings.Contains(env, "FOO=bar") {
		t.Fatalf("container env after the change: %s", env)
	}
	if out := e.mustRunBin(bin, withEnv...); !strings.Contains(out, `"action": "keep"`) {
		t.Fatalf("deploy after the change, again: %s", out)
	}
	// Killed: status says so (exit 1: Scope is down); the next deploy starts it again.
	deploytest.KillAndWait(t, name)
	out, _, code := e.run("status", host, "--name", name, "--json")
	if v := decode[statusJSON](t, out); code != 1 || v.Healthy || v.Container == nil || v.Container.Status != "exited" || v.Container.Running {
		t.Fatalf("status after kill: exit %d %s", code, out)
	}
	if out := e.mustRunBin(bin, withEnv...); !strings.Contains(out, `"action": "start"`) || !strings.Contains(out, `"status": "loaded"`) {
		t.Fatalf("deploy after kill: %s", out)
	}
	// A new image under the same tag: pulled, container replaced.
	stub.Variant = "v2"
	reg.Push(stub)
	if out := e.mustRunBin(bin, withEnv...); !strings.Contains(out, `"action": "pull"`) || !strings.Contains(out, `"action": "replace"`) {
		t.Fatalf("deploy after a new image under the same tag: %s", out)
	}
	// A tag the registry lacks: a one-line error, no container.
	other := "scopectl-cli-test-" + deploytest.RandHex(5)
	deploytest.RemoveContainerAtEnd(t, other)
	cmd := exec.Command(bin, "deploy", "--host", host, "--image", reg.Addr+"/scopestub:missing", "--name", other, "--gpus=false",
		"--volume", vol, "--port", fmt.Sprint(deploytest.FreePort(t)), "--wait", "10s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("deploy of a missing tag succeeded")
	}
	msg := strings.TrimSpace(stderr.String())
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "docker pull") || !strings.Contains(msg, "not found") {
		t.Fatalf("want a one-line pull error, got %q", msg)
	}
	if deploytest.ContainerExists(t, other) {
		t.Fatal("a failed pull left a container")
	}
}
