package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

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

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func dockerCmd(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return string(out), err
}

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	imgOnce sync.Once
	imgRef  string
	imgErr  error
	imgSkip string
)

// stubImage builds (once per test binary) a FROM-scratch image running scopestub.
func stubImage(t *testing.T) string {
	t.Helper()
	imgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, err := exec.LookPath("docker"); err != nil {
			imgSkip = "docker is not installed: " + err.Error()
			return
		}
		if out, err := dockerCmd(ctx, "info", "--format", "{{.ServerVersion}}"); err != nil {
			imgSkip = "docker engine is not usable: " + strings.TrimSpace(out)
			return
		}
		dir, err := os.MkdirTemp("", "scopectl-deploy-img-")
		if err != nil {
			imgErr = err
			return
		}
		defer os.RemoveAll(dir)
		build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "scopestub"), "./internal/scope/scopestub")
		build.Dir = repoRoot(t)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			imgErr = fmt.Errorf("building scopestub: %v\n%s", err, out)
			return
		}
		df := "FROM scratch\nCOPY scopestub /scopestub\nENTRYPOINT [\"/scopestub\",\"--host\",\"0.0.0.0\",\"--port\",\"8000\"]\n"
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
			imgErr = err
			return
		}
		ref := "scopectl-test-scopestub:" + randHex(6)
		if out, err := dockerCmd(ctx, "build", "--quiet", "--tag", ref, dir); err != nil {
			imgErr = fmt.Errorf("docker build: %v\n%s", err, out)
			return
		}
		imgRef = ref
	})
	if imgSkip != "" {
		t.Skip("skipping: " + imgSkip)
	}
	if imgErr != nil {
		t.Fatal(imgErr)
	}
	return imgRef
}

func TestMain(m *testing.M) {
	code := m.Run()
	if imgRef != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, _ = dockerCmd(ctx, "image", "rm", "--force", imgRef)
		cancel()
	}
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testSpec(t *testing.T, img string) Spec {
	name := "scopectl-test-" + randHex(5)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = dockerCmd(ctx, "rm", "--force", name)
	})
	return Spec{Image: img, Name: name, Port: freePort(t), Volume: t.TempDir(), Env: map[string]string{"FOO": "bar"}, Pull: PullNever}
}

func actions(steps []Step) string {
	var a []string
	for _, s := range steps {
		a = append(a, s.Action)
	}
	return strings.Join(a, ",")
}

func TestApplyLifecycle(t *testing.T) {
	img := stubImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := &shRunner{}
	s := testSpec(t, img)
	const token = "hf_SuperSecretTokenValue0123456789"
	s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New(token)}

	plan, err := Plan(ctx, r, s)
	if err != nil || actions(plan) != "create" {
		t.Fatalf("Plan = %v, %v; want create", plan, err)
	}
	steps, err := Apply(ctx, r, s, false)
	if err != nil {
		t.Fatal(err)
	}
	if actions(steps) != "create" {
		t.Fatalf("first Apply = %v", steps)
	}
	c := &scope.Client{Base: fmt.Sprintf("http://127.0.0.1:%d", s.Port)}
	if _, err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		out, _ := dockerCmd(ctx, "logs", s.Name)
		t.Fatalf("WaitHealthy: %v\ncontainer logs:\n%s", err, out)
	}
	out, err := dockerCmd(ctx, "inspect", "--format", "{{json .Config.Env}} {{.HostConfig.RestartPolicy.Name}} {{json .HostConfig.Binds}}", s.Name)
	if err != nil {
		t.Fatal(out)
	}
	for _, want := range []string{"DAYDREAM_SCOPE_MODELS_DIR=/workspace/models", "DAYDREAM_SCOPE_LOGS_DIR=/workspace/logs",
		"DAYDREAM_SCOPE_LORA_DIR=/workspace/models/lora", "SCOPE_LORA_DIR=/workspace/models/lora", "FOO=bar", "HF_TOKEN=", "unless-stopped", s.Volume + ":/workspace"} {
		if !strings.Contains(out, want) {
			t.Errorf("docker inspect lacks %q: %s", want, out)
		}
	}

	// Idempotent.
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "keep" {
		t.Fatalf("second Apply = %v, %v; want keep", steps, err)
	}
	if dry, err := Apply(ctx, r, s, true); err != nil || actions(dry) != "keep" {
		t.Fatalf("dry run = %v, %v; want keep", dry, err)
	}

	// Changed env → replace.
	s.Env = map[string]string{"FOO": "baz"}
	if dry, err := Apply(ctx, r, s, true); err != nil || actions(dry) != "replace" {
		t.Fatalf("dry run after env change = %v, %v; want replace", dry, err)
	}
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "replace" {
		t.Fatalf("Apply after env change = %v, %v; want replace", steps, err)
	}
	if _, err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, _ := dockerCmd(ctx, "inspect", "--format", "{{json .Config.Env}}", s.Name); !strings.Contains(out, "FOO=baz") {
		t.Fatalf("replaced container env: %s", out)
	}

	// Changed secret → replace.
	s.SecretEnv = map[string]secret.Secret{"HF_TOKEN": secret.New(token + "X")}
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "replace" {
		t.Fatalf("Apply after secret change = %v, %v; want replace", steps, err)
	}

	// Killed → start.
	if out, err := dockerCmd(ctx, "kill", s.Name); err != nil {
		t.Fatal(out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := dockerCmd(ctx, "inspect", "--format", "{{.State.Running}}", s.Name)
		if strings.TrimSpace(out) == "false" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container still running after docker kill: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	steps, err = Apply(ctx, r, s, false)
	if err != nil || actions(steps) != "start" {
		t.Fatalf("Apply after kill = %v, %v; want start", steps, err)
	}
	if _, err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
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

func TestSecretNotInErrors(t *testing.T) {
	img := stubImage(t)
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
	img := stubImage(t)
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
