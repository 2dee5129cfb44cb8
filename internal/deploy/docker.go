// Package deploy runs Daydream Scope as a Docker container on a host reached through a
// remote.Runner (SSH exec, or a local shell in tests). Deployment is declarative and
// idempotent: Plan compares the wanted Spec with the running container (image ID and a
// settings hash kept in a container label) and Apply only changes what differs.
package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/docker"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// Defaults of Spec's fields.
const (
	DefaultImage   = "daydreamlive/scope:main"
	DefaultName    = docker.DefaultName
	DefaultPort    = 8000
	DefaultVolume  = "/workspace"
	DefaultLoRADir = "/workspace/models/lora"

	// ContainerPort is the port Scope listens on inside its image.
	ContainerPort = docker.ContainerPort
	// SettingsLabel holds the settings hash of a container scopectl created.
	SettingsLabel = docker.SettingsLabel
	// ManagedLabel marks containers scopectl created.
	ManagedLabel = docker.ManagedLabel
)

// Pull policies.
const (
	PullAlways  = "always"  // docker pull on every Apply (default); a failed pull is an error
	PullMissing = "missing" // pull only when the image is not on the host
	PullNever   = "never"   // never pull; the image must already be on the host
)

// Spec is the wanted deployment.
type Spec struct {
	Image string // default daydreamlive/scope:main
	Name  string // container name, default daydream-scope
	Port  int    // host port published to the container's 8000, default 8000
	GPUs  bool   // --gpus all
	Env   map[string]string
	// SecretEnv (e.g. HF_TOKEN) reaches the container through an env file written with
	// umask 077 on the host and removed right after the container is created; the values
	// never appear on a docker command line.
	SecretEnv map[string]secret.Secret
	Volume    string // host directory mounted at /workspace, default /workspace
	LoRADir   string // in the container, default /workspace/models/lora; must be under /workspace
	Pull      string // always (default) | missing | never; not part of the settings hash
	// Labels are more container labels (the pod's limits: provider.Limits.Labels); a
	// change replaces the container, as labels cannot change on a running one.
	Labels map[string]string
}

// Step is one thing Apply does (or would do).
type Step struct {
	Action string `json:"action"` // pull | create | replace | keep | start
	Reason string `json:"reason"`
}

var envRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// managedEnv are the variables Apply sets itself; Env and SecretEnv may not set them.
var managedEnv = []string{"DAYDREAM_SCOPE_MODELS_DIR", "DAYDREAM_SCOPE_LOGS_DIR", "DAYDREAM_SCOPE_LORA_DIR", "SCOPE_LORA_DIR"}

// Normalize fills defaults and validates s. Errors never contain secret values.
func Normalize(s Spec) (Spec, error) {
	if s.Image == "" {
		s.Image = DefaultImage
	}
	if s.Name == "" {
		s.Name = DefaultName
	}
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.Volume == "" {
		s.Volume = DefaultVolume
	}
	if s.LoRADir == "" {
		s.LoRADir = DefaultLoRADir
	}
	if s.Pull == "" {
		s.Pull = PullAlways
	}
	switch s.Pull {
	case PullAlways, PullMissing, PullNever:
	default:
		return s, fmt.Errorf("deploy: pull policy %q: want always, missing or never", s.Pull)
	}
	if strings.ContainsAny(s.Image, " \t\r\n'\"") || strings.HasPrefix(s.Image, "-") {
		return s, fmt.Errorf("deploy: image %q: not an image reference", s.Image)
	}
	if !docker.ValidName(s.Name) {
		return s, fmt.Errorf("deploy: container name %q: want letters, digits, _ . - (starting with a letter or digit)", s.Name)
	}
	if s.Port < 1 || s.Port > 65535 {
		return s, fmt.Errorf("deploy: port %d: out of range 1-65535", s.Port)
	}
	if !path.IsAbs(s.Volume) || strings.ContainsAny(s.Volume, ":\n\r") {
		return s, fmt.Errorf("deploy: volume %q: want an absolute host path without ':'", s.Volume)
	}
	s.Volume = path.Clean(s.Volume)
	if !path.IsAbs(s.LoRADir) {
		return s, fmt.Errorf("deploy: LoRA dir %q: want an absolute path inside the container, under /workspace", s.LoRADir)
	}
	s.LoRADir = path.Clean(s.LoRADir)
	if !strings.HasPrefix(s.LoRADir, "/workspace/") {
		return s, fmt.Errorf("deploy: LoRA dir %q is not under /workspace: only /workspace is mounted from the host (%s), so LoRAs anywhere else would be lost whenever the container is replaced", s.LoRADir, s.Volume)
	}
	if strings.ContainsAny(s.LoRADir, "\n\r") {
		return s, fmt.Errorf("deploy: LoRA dir %q: contains a line break", s.LoRADir)
	}
	isManaged := func(k string) bool {
		for _, m := range managedEnv {
			if k == m {
				return true
			}
		}
		return false
	}
	for k, v := range s.Env {
		if !envRE.MatchString(k) {
			return s, fmt.Errorf("deploy: env name %q: not a valid variable name", k)
		}
		if isManaged(k) {
			return s, fmt.Errorf("deploy: env %s is set by scopectl (from Volume/LoRADir); do not set it", k)
		}
		if strings.ContainsAny(v, "\n\r\x00") {
			return s, fmt.Errorf("deploy: env %s: value contains a line break or NUL", k)
		}
	}
	for k, v := range s.Labels {
		if k == "" || k == ManagedLabel || k == SettingsLabel || strings.ContainsAny(k, "=\n\r\x00") || strings.ContainsAny(v, "\n\r\x00") {
			return s, fmt.Errorf("deploy: label %q: want a name without '=' or line breaks, not one scopectl sets itself, and a value on one line", k)
		}
	}
	for k, v := range s.SecretEnv {
		if !envRE.MatchString(k) {
			return s, fmt.Errorf("deploy: secret env name %q: not a valid variable name", k)
		}
		if isManaged(k) {
			return s, fmt.Errorf("deploy: secret env %s is set by scopectl; do not set it", k)
		}
		if _, dup := s.Env[k]; dup {
			return s, fmt.Errorf("deploy: %s is in both env and secret env", k)
		}
		if !v.IsSet() {
			return s, fmt.Errorf("deploy: secret env %s is empty", k)
		}
		if strings.ContainsAny(v.Reveal(), "\n\r\x00") {
			return s, fmt.Errorf("deploy: secret env %s: value contains a line break or NUL (not representable in an env file)", k)
		}
	}
	return s, nil
}

// containerEnv is the plain (non-secret) environment of the container, sorted.
func containerEnv(s Spec) []string {
	env := []string{
		"DAYDREAM_SCOPE_MODELS_DIR=/workspace/models",
		"DAYDREAM_SCOPE_LOGS_DIR=/workspace/logs",
		"DAYDREAM_SCOPE_LORA_DIR=" + s.LoRADir,
		"SCOPE_LORA_DIR=" + s.LoRADir,
	}
	for k, v := range s.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// SettingsHash is the sha256 of the normalized spec without secret values, plus a hash of
// the secret values (so a changed token replaces the container). s must be normalized.
func SettingsHash(s Spec) string {
	sh := sha256.New()
	sh.Write([]byte("scopectl-secret-env-v1\x00"))
	for _, k := range slices.Sorted(maps.Keys(s.SecretEnv)) {
		sh.Write([]byte(k + "\x00" + s.SecretEnv[k].Reveal() + "\x00"))
	}
	doc := struct {
		V          int      `json:"v"`
		Image      string   `json:"image"`
		Name       string   `json:"name"`
		Port       int      `json:"port"`
		GPUs       bool     `json:"gpus"`
		Env        []string `json:"env"`
		SecretKeys []string `json:"secret_keys"`
		SecretHash string   `json:"secret_hash"`
		Volume     string   `json:"volume"`
		LoRADir    string   `json:"lora_dir"`
		Labels     []string `json:"labels,omitempty"` // absent without labels: the hash of older containers holds
	}{1, s.Image, s.Name, s.Port, s.GPUs, containerEnv(s), slices.Sorted(maps.Keys(s.SecretEnv)), hex.EncodeToString(sh.Sum(nil)), s.Volume, s.LoRADir, labelArgs(s)}
	b, _ := json.Marshal(doc)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// q single-quotes one shell argument.
var q = docker.Quote

func run(ctx context.Context, r remote.Runner, script string) (string, int, error) {
	out, code, err := r.Run(ctx, script)
	return out, code, err
}

// wrap says that a Docker primitive failed during a deploy.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("deploy: %w", err)
}

// imageID returns the local image ID of ref, or "" when the host does not have it.
func imageID(ctx context.Context, r remote.Runner, ref string) (string, error) {
	id, err := docker.ImageID(ctx, r, ref)
	return id, wrap(err)
}

type containerState struct {
	Exists   bool
	ImageID  string
	Settings string
	Running  bool
	Status   string
}

// Container is a container as `docker container inspect` describes it.
type Container = docker.Container

// Inspect reads the container name on the host r reaches (docker.Inspect).
// A container that does not exist is not an error: Exists is false.
func Inspect(ctx context.Context, r remote.Runner, name string) (*Container, error) {
	c, err := docker.Inspect(ctx, r, name)
	return c, wrap(err)
}

func inspectContainer(ctx context.Context, r remote.Runner, name string) (containerState, error) {
	c, err := Inspect(ctx, r, name)
	if err != nil || !c.Exists {
		return containerState{}, err
	}
	return containerState{Exists: true, ImageID: c.ImageID, Settings: c.Settings, Running: c.Running, Status: c.Status}, nil
}

func short(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// plan compares the normalized spec with the host's state and also returns the local image
// ID ("" if absent). willPull adds a "pull" step for an image already present (Plan under
// the always policy: only a pull can tell whether the registry has a newer one).
func plan(ctx context.Context, r remote.Runner, s Spec, willPull bool) ([]Step, string, error) {
	var steps []Step
	img, err := imageID(ctx, r, s.Image)
	if err != nil {
		return nil, "", err
	}
	if img == "" {
		if s.Pull == PullNever {
			return nil, "", fmt.Errorf("deploy: image %s is not on the host and the pull policy is never", s.Image)
		}
		steps = append(steps, Step{"pull", "image " + s.Image + " is not on the host"})
	} else if willPull {
		steps = append(steps, Step{"pull", "check " + s.Image + " for a newer image (now " + short(img) + ")"})
	}
	c, err := inspectContainer(ctx, r, s.Name)
	if err != nil {
		return nil, "", err
	}
	want := SettingsHash(s)
	switch {
	case !c.Exists:
		steps = append(steps, Step{"create", "container " + s.Name + " does not exist"})
	case img == "" || c.ImageID != img:
		why := "image changed"
		if img != "" {
			why = fmt.Sprintf("image changed: container runs %s, %s is %s", short(c.ImageID), s.Image, short(img))
		}
		if c.Settings != want {
			why += "; settings changed"
		}
		steps = append(steps, Step{"replace", why})
	case c.Settings != want:
		why := "settings changed"
		if c.Settings == "" {
			why = "container " + s.Name + " was not created by scopectl (no " + SettingsLabel + " label)"
		}
		steps = append(steps, Step{"replace", why})
	case !c.Running:
		steps = append(steps, Step{"start", "container " + s.Name + " is " + c.Status})
	default:
		steps = append(steps, Step{"keep", "container " + s.Name + " is running " + short(img) + " with the wanted settings"})
	}
	return steps, img, nil
}

func redactor(s Spec) *secret.Redactor {
	red := &secret.Redactor{}
	for _, v := range s.SecretEnv {
		red.Add(v)
	}
	return red
}

// Plan says what Apply would do, without changing anything on the host. With the default
// pull policy it cannot know whether the registry has a newer image, so it lists a "pull"
// step that Apply only reports again if the image really changed.
func Plan(ctx context.Context, r remote.Runner, s Spec) ([]Step, error) {
	s, err := Normalize(s)
	if err != nil {
		return nil, err
	}
	steps, _, err := plan(ctx, r, s, s.Pull == PullAlways)
	return steps, redactor(s).Error(err)
}

// Apply makes the host run the container s describes: pull, create, replace (only when
// the image or the settings changed), or start a stopped one. A second Apply of the same
// spec returns a single "keep" step. With dryRun it is Plan.
func Apply(ctx context.Context, r remote.Runner, s Spec, dryRun bool) ([]Step, error) {
	s, err := Normalize(s)
	if err != nil {
		return nil, err
	}
	if dryRun {
		return Plan(ctx, r, s)
	}
	steps, err := apply(ctx, r, s)
	return steps, redactor(s).Error(err)
}

func apply(ctx context.Context, r remote.Runner, s Spec) ([]Step, error) {
	var steps []Step
	before, err := imageID(ctx, r, s.Image)
	if err != nil {
		return nil, err
	}
	if s.Pull == PullAlways || (s.Pull == PullMissing && before == "") {
		if err := docker.Pull(ctx, r, s.Image); err != nil {
			return nil, wrap(err)
		}
	}
	planned, img, err := plan(ctx, r, s, false)
	if err != nil {
		return nil, err
	}
	if img == "" {
		return nil, fmt.Errorf("deploy: image %s is still not on the host after pulling", s.Image)
	}
	if img != before {
		if before == "" {
			steps = append(steps, Step{"pull", "pulled " + s.Image + " (" + short(img) + ")"})
		} else {
			steps = append(steps, Step{"pull", "pulled a newer " + s.Image + ": " + short(before) + " → " + short(img)})
		}
	}
	for _, st := range planned {
		switch st.Action {
		case "pull", "keep":
		case "create":
			if err := create(ctx, r, s); err != nil {
				return steps, err
			}
		case "replace":
			if err := docker.Remove(ctx, r, s.Name); err != nil {
				return steps, wrap(err)
			}
			if err := create(ctx, r, s); err != nil {
				return steps, err
			}
		case "start":
			if err := Start(ctx, r, s.Name); err != nil {
				return steps, err
			}
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// Start starts the container name (docker start; a running one stays as it is).
func Start(ctx context.Context, r remote.Runner, name string) error {
	return wrap(docker.Start(ctx, r, name))
}

// Stop stops the container name (docker stop; a stopped one stays as it is). Its
// restart policy does not bring it back until it is started again.
func Stop(ctx context.Context, r remote.Runner, name string) error {
	return wrap(docker.Stop(ctx, r, name))
}

// envFileScript is the script that writes the secret env file: it carries the secret
// values (in a here-document, never as arguments) and runs nothing but the shell's own
// umask, mktemp and cat, then prints the file's path.
func envFileScript(s Spec) (string, error) {
	var b strings.Builder
	b.WriteString("umask 077\nf=$(mktemp \"${TMPDIR:-/tmp}/scopectl-env.XXXXXXXX\") || exit 1\ncat >\"$f\" <<'SCOPECTL_ENV_EOF' || { rm -f \"$f\"; exit 1; }\n")
	for _, k := range slices.Sorted(maps.Keys(s.SecretEnv)) {
		b.WriteString(k + "=" + s.SecretEnv[k].Reveal() + "\n")
	}
	b.WriteString("SCOPECTL_ENV_EOF\nprintf '%s\\n' \"$f\"\n")
	return b.String(), nil
}

// labelArgs are s.Labels as sorted KEY=VALUE (nil without labels).
func labelArgs(s Spec) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		out = append(out, k+"="+s.Labels[k])
	}
	return out
}

// createCommand is the docker run command line (shell-quoted) for s, with envFile ("" for
// none) as its --env-file. It never contains secret values.
func createCommand(s Spec, envFile string) string { return docker.RunCommand(createArgs(s, envFile)) }

// createArgs are the arguments of docker run for s (see createCommand).
func createArgs(s Spec, envFile string) []string {
	args := []string{"--detach", "--name", s.Name,
		"--restart", "unless-stopped",
		"--publish", strconv.Itoa(s.Port) + ":" + strconv.Itoa(ContainerPort),
		"--volume", s.Volume + ":/workspace",
		"--label", ManagedLabel + "=true",
		"--label", SettingsLabel + "=" + SettingsHash(s),
	}
	for _, l := range labelArgs(s) {
		args = append(args, "--label", l)
	}
	if s.GPUs {
		args = append(args, "--gpus", "all")
	}
	for _, e := range containerEnv(s) {
		args = append(args, "--env", e)
	}
	if envFile != "" {
		args = append(args, "--env-file", envFile)
	}
	return append(args, s.Image)
}

func create(ctx context.Context, r remote.Runner, s Spec) (err error) {
	envFile := ""
	if len(s.SecretEnv) > 0 {
		var out string
		var code int
		var rerr error
		if ir, ok := r.(remote.InputRunner); ok {
			// Over SSH exec the script is a command line the host's process list shows:
			// the values travel on standard input instead.
			var vals strings.Builder
			for _, k := range slices.Sorted(maps.Keys(s.SecretEnv)) {
				vals.WriteString(k + "=" + s.SecretEnv[k].Reveal() + "\n")
			}
			out, code, rerr = ir.RunInput(ctx, "umask 077\nf=$(mktemp \"${TMPDIR:-/tmp}/scopectl-env.XXXXXXXX\") || exit 1\ncat >\"$f\" || { rm -f \"$f\"; exit 1; }\nprintf '%s\\n' \"$f\"\n", strings.NewReader(vals.String()))
		} else {
			// A terminal (the PTY gateway) reads the here-document as typed input, not argv.
			script, _ := envFileScript(s)
			out, code, rerr = run(ctx, r, script)
		}
		if rerr != nil {
			return fmt.Errorf("deploy: writing the secret env file: %w", rerr)
		}
		envFile = strings.TrimSpace(out)
		if code != 0 || envFile == "" || strings.ContainsAny(envFile, "\n'") {
			return fmt.Errorf("deploy: writing the secret env file failed (exit %d): %s", code, docker.Trim(out))
		}
		defer func() {
			// Docker reads the file when the container is created; it is not needed after.
			out, code, rerr := run(context.WithoutCancel(ctx), r, "rm -f "+q(envFile))
			if rerr == nil && code != 0 {
				rerr = fmt.Errorf("exit %d: %s", code, docker.Trim(out))
			}
			if rerr != nil && err == nil {
				err = fmt.Errorf("deploy: removing the secret env file %s: %w", envFile, rerr)
			}
		}()
	}
	return wrap(docker.Run(ctx, r, s.Name, createArgs(s, envFile)))
}

// LogLine is one line of a container's log, with the time docker stamped it.
type LogLine = docker.LogLine

// Logs returns the last tail lines of the container's output (stdout and stderr), or,
// when since is not zero, the lines docker stamped after since (tail still bounds them).
func Logs(ctx context.Context, r remote.Runner, name string, tail int, since time.Time) ([]LogLine, error) {
	ls, err := docker.Logs(ctx, r, name, tail, since)
	return ls, wrap(err)
}
