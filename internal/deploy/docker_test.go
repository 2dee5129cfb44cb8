package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// shRunner runs scripts with sh -c on this machine and records them.
type shRunner struct {
	mu      sync.Mutex
	scripts []string
}

func (r *shRunner) Run(ctx context.Context, script string) (string, int, error) {
	r.mu.Lock()
	r.scripts = append(r.scripts, script)
	r.mu.Unlock()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode(), nil
	}
	if err != nil {
		return string(out), -1, err
	}
	return string(out), 0, nil
}

func (r *shRunner) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.scripts...)
}

// testSpec is a spec for img (in the test registry) with a fresh container name, removed
// when the test ends. Images are pulled (the default policy), as in real use.
func testSpec(t *testing.T, img string) Spec {
	name := "scopectl-test-" + deploytest.RandHex(5)
	deploytest.RemoveContainerAtEnd(t, name)
	return Spec{Image: img, Name: name, Port: deploytest.FreePort(t), Volume: t.TempDir(), Env: map[string]string{"FOO": "bar"}}
}

// stubImage starts a registry for t and pushes the Scope stand-in to it (no local copy).
func stubImage(t *testing.T) (*deploytest.Registry, string) {
	reg := deploytest.StartRegistry(t)
	return reg, reg.Push(deploytest.Image{})
}

func dockerCmd(ctx context.Context, args ...string) (string, error) {
	return deploytest.Docker(ctx, args...)
}

func actions(steps []Step) string {
	var a []string
	for _, s := range steps {
		a = append(a, s.Action)
	}
	return strings.Join(a, ",")
}

func waitHealthy(ctx context.Context, t *testing.T, s Spec) {
	t.Helper()
	c := &scope.Client{Base: fmt.Sprintf("http://127.0.0.1:%d", s.Port)}
	if _, err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		out, _ := dockerCmd(ctx, "logs", s.Name)
		t.Fatalf("WaitHealthy: %v\ncontainer logs:\n%s", err, out)
	}
}

// deployed is the part of docker inspect a deploy controls.
type deployed struct {
	Image, Restart, Binds, Ports, Settings string
	Env                                    []string
}

func inspectOf(ctx context.Context, t *testing.T, name string) deployed {
	t.Helper()
	out, err := dockerCmd(ctx, "inspect", "--format", "{{.Image}}\n{{.HostConfig.RestartPolicy.Name}}\n{{json .HostConfig.Binds}}\n{{json .HostConfig.PortBindings}}\n{{index .Config.Labels \""+SettingsLabel+"\"}}\n{{range .Config.Env}}{{println .}}{{end}}", name)
	if err != nil {
		t.Fatal(out)
	}
	f := strings.Split(strings.TrimSpace(out), "\n")
	if len(f) < 5 {
		t.Fatalf("docker inspect: %q", out)
	}
	env := f[5:]
	sort.Strings(env)
	return deployed{Image: f[0], Restart: f[1], Binds: f[2], Ports: f[3], Settings: f[4], Env: env}
}

// TestApplyLifecycle deploys the Scope stand-in pulled from a local registry: first
// deploy pulls and creates, a second changes nothing, a changed setting replaces the
// container with only that setting changed, a new image under the same tag replaces it,
// a killed container is started again.
func TestApplyLifecycle(t *testing.T) {
	reg, img := stubImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := &shRunner{}
	s := testSpec(t, img)
	const token = "hf_SuperSecretTokenValue0123456789"
	s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New(token)}

	plan, err := Plan(ctx, r, s)
	if err != nil || actions(plan) != "pull,create" {
		t.Fatalf("Plan = %v, %v; want pull,create", plan, err)
	}
	steps, err := Apply(ctx, r, s, false)
	if err != nil {
		t.Fatal(err)
	}
	if actions(steps) != "pull,create" {
		t.Fatalf("first Apply = %v; want pull,create (the image is only in the registry)", steps)
	}
	waitHealthy(ctx, t, s)
	first := inspectOf(ctx, t, s.Name)
	all := fmt.Sprint(first)
	for _, want := range []string{"DAYDREAM_SCOPE_MODELS_DIR=/workspace/models", "DAYDREAM_SCOPE_LOGS_DIR=/workspace/logs",
		"DAYDREAM_SCOPE_LORA_DIR=/workspace/models/lora", "SCOPE_LORA_DIR=/workspace/models/lora", "FOO=bar", "HF_TOKEN=", "unless-stopped", s.Volume + ":/workspace", fmt.Sprint(s.Port)} {
		if !strings.Contains(all, want) {
			t.Errorf("docker inspect lacks %q: %s", want, all)
		}
	}

	// Idempotent: the pull finds nothing new, the container is kept.
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "keep" {
		t.Fatalf("second Apply = %v, %v; want keep", steps, err)
	}
	if again := inspectOf(ctx, t, s.Name); fmt.Sprint(again) != all {
		t.Fatalf("second Apply changed the container:\n%s\n%s", first, again)
	}
	if dry, err := Apply(ctx, r, s, true); err != nil || actions(dry) != "pull,keep" {
		t.Fatalf("dry run = %v, %v; want pull (check),keep", dry, err)
	}

	// One changed setting → replace, and only that setting differs.
	s.Env = map[string]string{"FOO": "baz"}
	if dry, err := Apply(ctx, r, s, true); err != nil || actions(dry) != "pull,replace" {
		t.Fatalf("dry run after env change = %v, %v; want pull,replace", dry, err)
	}
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "replace" {
		t.Fatalf("Apply after env change = %v, %v; want replace", steps, err)
	}
	waitHealthy(ctx, t, s)
	changed := inspectOf(ctx, t, s.Name)
	want := first
	want.Env = append([]string(nil), first.Env...)
	for i, e := range want.Env {
		if e == "FOO=bar" {
			want.Env[i] = "FOO=baz"
		}
	}
	want.Settings = changed.Settings
	if fmt.Sprint(changed) != fmt.Sprint(want) || changed.Settings == first.Settings {
		t.Fatalf("after changing FOO only:\n got %v\nwant %v (and a new settings hash)", changed, want)
	}

	// Changed secret → replace.
	s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New(token + "X")}
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "replace" {
		t.Fatalf("Apply after secret change = %v, %v; want replace", steps, err)
	}

	// A new image pushed under the same tag → pulled, container replaced.
	oldImage := inspectOf(ctx, t, s.Name).Image
	if img2 := reg.Push(deploytest.Image{Tag: img[strings.LastIndexByte(img, ':')+1:], Variant: "v2"}); img2 != img {
		t.Fatalf("pushed %s, want %s", img2, img)
	}
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "pull,replace" {
		t.Fatalf("Apply after a new image under the same tag = %v, %v; want pull,replace", steps, err)
	}
	if newImage := inspectOf(ctx, t, s.Name).Image; newImage == oldImage {
		t.Fatalf("container still runs %s", oldImage)
	}
	waitHealthy(ctx, t, s)
	if steps, err := Apply(ctx, r, s, false); err != nil || actions(steps) != "keep" {
		t.Fatalf("Apply after the image update = %v, %v; want keep", steps, err)
	}

	// Killed → start.
	deploytest.KillAndWait(t, s.Name)
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "start" {
		t.Fatalf("Apply after kill = %v, %v; want start", steps, err)
	}
	waitHealthy(ctx, t, s)
	if steps, err := Apply(ctx, r, s, false); err != nil || actions(steps) != "keep" {
		t.Fatalf("Apply after start = %v, %v; want keep", steps, err)
	}

	// The secret never appears in a docker command line, and the env file is gone.
	sawEnvFile := false
	for _, sc := range r.all() {
		hasSecret := strings.Contains(sc, token)
		if strings.Contains(sc, "docker") && hasSecret {
			t.Errorf("a docker script carries the secret:\n%s", sc)
		}
		if hasSecret && !strings.HasPrefix(sc, "umask 077\n") {
			t.Errorf("secret in a script that does not start with umask 077:\n%s", sc)
		}
		if strings.Contains(sc, "--env-file") {
			sawEnvFile = true
			i := strings.Index(sc, "--env-file' '")
			f := sc[i+len("--env-file' '"):]
			f = f[:strings.IndexByte(f, '\'')]
			if _, err := os.Stat(f); !os.IsNotExist(err) {
				t.Errorf("secret env file %s still exists (err %v)", f, err)
			}
		}
	}
	if !sawEnvFile {
		t.Error("no docker command used --env-file")
	}
}

// A tag the registry does not have: a one-line error naming the image, and no container.
func TestPullFailure(t *testing.T) {
	reg, _ := stubImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := &shRunner{}
	s := testSpec(t, reg.Addr+"/scopestub:no-such-tag")
	_, err := Apply(ctx, r, s, false)
	if err == nil {
		t.Fatal("Apply of a missing tag succeeded")
	}
	msg := err.Error()
	t.Log(msg)
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "docker pull "+s.Image) || !strings.Contains(msg, "not found") {
		t.Fatalf("want one line naming the image and saying not found, got %q", msg)
	}
	if deploytest.ContainerExists(t, s.Name) {
		t.Fatal("a container was left behind")
	}
	// An unreachable registry: the same, one line.
	s.Image = fmt.Sprintf("127.0.0.1:%d/scopestub:x", deploytest.FreePort(t))
	if _, err := Apply(ctx, r, s, false); err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("unreachable registry: %v", err)
	}
	if deploytest.ContainerExists(t, s.Name) {
		t.Fatal("a container was left behind")
	}
}

func TestSecretNotInErrors(t *testing.T) {
	_, img := stubImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := &shRunner{}
	s := testSpec(t, img)
	const token = "hf_AnotherSecretTokenValue987654321"
	s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New(token)}
	// Occupy the port so that docker run fails after the env file was read.
	l, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", s.Port))
	if err != nil {
		t.Skip("cannot hold the test port: ", err)
	}
	defer l.Close()
	_, err = Apply(ctx, r, s, false)
	if err == nil {
		t.Fatal("Apply succeeded with the host port taken")
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("error carries the secret: %v", err)
	}
	for _, sc := range r.all() {
		if strings.Contains(sc, "docker") && strings.Contains(sc, token) {
			t.Errorf("a docker script carries the secret:\n%s", sc)
		}
	}
	// Secret with a line break is refused without echoing it.
	s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New(token + "\nEVIL=1")}
	if _, err := Apply(ctx, r, s, false); err == nil || strings.Contains(err.Error(), token) {
		t.Fatalf("multi-line secret: err = %v", err)
	}
}

func TestLoRADirOutsideWorkspace(t *testing.T) {
	r := &shRunner{}
	for _, dir := range []string{"/models/lora", "/workspace", "/workspace/../etc", "relative/lora"} {
		_, err := Apply(context.Background(), r, Spec{LoRADir: dir}, false)
		if err == nil || !strings.Contains(err.Error(), "/workspace") {
			t.Errorf("LoRADir %q: err = %v; want a refusal naming /workspace", dir, err)
		}
		if _, err := Plan(context.Background(), r, Spec{LoRADir: dir}); err == nil {
			t.Errorf("Plan with LoRADir %q succeeded", dir)
		}
	}
	if n := len(r.all()); n != 0 {
		t.Errorf("%d scripts ran for refused specs", n)
	}
	if _, err := Normalize(Spec{LoRADir: "/workspace/loras"}); err != nil {
		t.Errorf("LoRADir under /workspace refused: %v", err)
	}
}

func TestCreateCommandQuoting(t *testing.T) {
	s, err := Normalize(Spec{Env: map[string]string{"A": "it's $(rm -rf /)"}, GPUs: true})
	if err != nil {
		t.Fatal(err)
	}
	cmd := createCommand(s, "/tmp/x")
	for _, want := range []string{`'--env' 'A=it'\''s $(rm -rf /)'`, `'--gpus' 'all'`, `'--restart' 'unless-stopped'`, `'--publish' '8000:8000'`, `'--volume' '/workspace:/workspace'`, `'--env-file' '/tmp/x'`, `'daydreamlive/scope:main'`} {
		if !strings.Contains(cmd, want) {
			t.Errorf("command lacks %s:\n%s", want, cmd)
		}
	}
	// Settings hash: stable, and sensitive to secret values without containing them.
	a := SettingsHash(s)
	if a != SettingsHash(s) {
		t.Error("hash not stable")
	}
	s2 := s
	s2.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New("hf_one_value_xxxxxxxx")}
	s3 := s
	s3.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New("hf_two_value_xxxxxxxx")}
	if SettingsHash(s2) == SettingsHash(s3) || SettingsHash(s2) == a {
		t.Error("hash ignores secret values")
	}
}

// inputRunner is an shRunner that can feed stdin, like the ssh:// backend.
type inputRunner struct{ shRunner }

func (r *inputRunner) RunInput(ctx context.Context, script string, stdin io.Reader) (string, int, error) {
	r.mu.Lock()
	r.scripts = append(r.scripts, script)
	r.mu.Unlock()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode(), nil
	}
	if err != nil {
		return string(out), -1, err
	}
	return string(out), 0, nil
}

// Over a runner with stdin (SSH exec), no script — hence no command line on the host —
// ever carries a secret, and the container still gets it.
func TestSecretsTravelOnStdin(t *testing.T) {
	_, img := stubImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := &inputRunner{}
	s := testSpec(t, img)
	const token = "hf_StdinOnlySecretValue0123456789"
	s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New(token)}
	if _, err := Apply(ctx, r, s, false); err != nil {
		t.Fatal(err)
	}
	for _, sc := range r.all() {
		if strings.Contains(sc, token) {
			t.Fatalf("a script carries the secret:\n%s", sc)
		}
	}
	out, _, err := r.Run(ctx, "docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "+q(s.Name))
	if err != nil || !strings.Contains(out, "HF_TOKEN="+token) {
		t.Fatalf("the container did not get the secret: %v", err)
	}
}
