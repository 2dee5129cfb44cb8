package docker

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// TestMain removes the programs the tests built (the Scope stand-in for the image).
func TestMain(m *testing.M) { testkit.Main(m) }

// sh runs scripts with sh -c on this machine, as an SSH exec session would on a host.
type sh struct{}

func (sh) Run(ctx context.Context, script string) (string, int, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil { // it did not start
		return string(out), -1, err
	}
	return string(out), cmd.ProcessState.ExitCode(), nil
}

// The primitives against the real engine: a container that does not exist is not an
// error, then pull, run, inspect (labels, port), logs, stop, start and remove.
func TestLifecycle(t *testing.T) {
	reg := deploytest.StartRegistry(t)
	img := reg.Push(deploytest.Image{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var r sh
	name := "scopectl-docker-test-" + deploytest.RandHex(5)
	deploytest.RemoveContainerAtEnd(t, name)

	if c, err := Inspect(ctx, r, name); err != nil || c.Exists {
		t.Fatalf("Inspect of a missing container: %+v %v", c, err)
	}
	if id, err := ImageID(ctx, r, img); err != nil || id != "" {
		t.Fatalf("ImageID before the pull: %q %v", id, err)
	}
	if err := Pull(ctx, r, img); err != nil {
		t.Fatal(err)
	}
	id, err := ImageID(ctx, r, img)
	if err != nil || !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("ImageID after the pull: %q %v", id, err)
	}
	port := deploytest.FreePort(t)
	args := []string{"--detach", "--name", name, "--publish", strconv.Itoa(port) + ":" + strconv.Itoa(ContainerPort),
		"--label", ManagedLabel + "=true", "--label", SettingsLabel + "=abc", img}
	if err := Run(ctx, r, name, args); err != nil {
		t.Fatal(err)
	}
	c, err := Inspect(ctx, r, name)
	if err != nil || !c.Exists || !c.Managed || c.Settings != "abc" || c.HostPort != port || c.ImageID != id || c.Image != img {
		t.Fatalf("Inspect: %+v %v", c, err)
	}
	if _, err := Logs(ctx, r, name, 10, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Logs(ctx, r, "bad name; rm -rf /", 10, time.Time{}); err == nil {
		t.Fatal("Logs accepted a bad container name")
	}
	if err := Stop(ctx, r, name); err != nil {
		t.Fatal(err)
	}
	if c, err := Inspect(ctx, r, name); err != nil || c.Running {
		t.Fatalf("after Stop: %+v %v", c, err)
	}
	if err := Start(ctx, r, name); err != nil {
		t.Fatal(err)
	}
	if c, err := Inspect(ctx, r, name); err != nil || !c.Running || c.StartedAt == "" {
		t.Fatalf("after Start: %+v %v", c, err)
	}
	if err := Remove(ctx, r, name); err != nil {
		t.Fatal(err)
	}
	err = Start(ctx, r, name)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "docker start "+name) {
		t.Fatalf("Start of a removed container: %v", err)
	}
}

func TestQuote(t *testing.T) {
	cmd := RunCommand([]string{"--env", "A=it's $(rm -rf /)"})
	want := `docker run '--env' 'A=it'\''s $(rm -rf /)'`
	if cmd != want {
		t.Fatalf("RunCommand = %s; want %s", cmd, want)
	}
	out, code, err := sh{}.Run(context.Background(), "printf %s "+Quote("it's $(echo no)"))
	if err != nil || code != 0 || out != "it's $(echo no)" {
		t.Fatalf("Quote round trip: %q %d %v", out, code, err)
	}
}
