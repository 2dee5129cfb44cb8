// Package docker runs the Docker commands scopectl needs on a host it reaches through a
// Runner (an SSH exec session, a terminal, or a local shell in tests): inspect, start,
// stop, logs, pull and run. It knows the Scope container's conventions (its port inside
// the image, the labels scopectl sets) so that deploy, which creates containers, and the
// SSH-host provider, which watches and stops them, share one reading of them without the
// provider importing deploy.
//
// Errors are one line with docker's own words and carry no package prefix: callers say
// what they were doing.
package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The Scope container's conventions.
const (
	// DefaultName is the name scopectl gives the Scope container on a host.
	DefaultName = "daydream-scope"
	// ContainerPort is the port Scope listens on inside its image.
	ContainerPort = 8000
	// SettingsLabel holds the settings hash of a container scopectl created.
	SettingsLabel = "scopectl.settings"
	// ManagedLabel marks containers scopectl created.
	ManagedLabel = "scopectl.managed"
)

// Runner runs a shell script on the host and returns its combined output and exit
// status; err is for failures to run it at all. remote.Runner is one.
type Runner interface {
	Run(ctx context.Context, script string) (output string, exitCode int, err error)
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// ValidName reports whether name is a container name Docker accepts (letters, digits,
// _ . -, starting with a letter or digit).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Quote single-quotes one shell argument.
func Quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Trim is docker's output trimmed and cut at 500 bytes, for an error message.
func Trim(out string) string {
	out = strings.TrimSpace(out)
	if len(out) > 500 {
		out = out[:500] + "…"
	}
	return out
}

// OneLine is Trim on one line: docker's words quoted in a one-line error message.
func OneLine(out string) string {
	return Trim(strings.Join(strings.Fields(out), " "))
}

// Container is a container as `docker container inspect` describes it: what
// `scopectl status` shows and what deploy's Plan compares.
type Container struct {
	Name         string `json:"name"`
	Exists       bool   `json:"exists"`
	Managed      bool   `json:"managed"`          // created by scopectl (ManagedLabel)
	Status       string `json:"status,omitempty"` // created | running | restarting | exited | paused | dead
	Running      bool   `json:"running"`
	ExitCode     int    `json:"exit_code"`
	StartedAt    string `json:"started_at,omitempty"` // RFC 3339, as Docker reports it
	RestartCount int    `json:"restart_count"`
	Image        string `json:"image,omitempty"`    // the reference it was created from
	ImageID      string `json:"image_id,omitempty"` // sha256:…
	HostPort     int    `json:"host_port,omitempty"`
	Settings     string `json:"-"`
	// Labels are the container's labels (the limits deploy records there among them).
	Labels map[string]string `json:"-"`
}

// Inspect reads the container name on the host r reaches (docker container inspect).
// A container that does not exist is not an error: Exists is false.
func Inspect(ctx context.Context, r Runner, name string) (*Container, error) {
	out, code, err := r.Run(ctx, "docker container inspect --format '{{json .}}' "+Quote(name)+" 2>&1")
	if err != nil {
		return nil, fmt.Errorf("docker container inspect %s: %w", name, err)
	}
	if code != 0 {
		if low := strings.ToLower(out); strings.Contains(low, "no such container") || strings.Contains(low, "no such object") {
			return &Container{Name: name}, nil
		}
		return nil, fmt.Errorf("docker container inspect %s (exit %d): %s", name, code, OneLine(out))
	}
	var c struct {
		Image        string
		RestartCount int
		Config       struct {
			Image  string
			Labels map[string]string
		}
		State struct {
			Running   bool
			Status    string
			ExitCode  int
			StartedAt string
		}
		HostConfig struct {
			PortBindings map[string][]struct{ HostPort string }
		}
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &c); err != nil {
		return nil, fmt.Errorf("docker container inspect %s: %v", name, err)
	}
	ct := &Container{Name: name, Exists: true, Managed: c.Config.Labels[ManagedLabel] == "true",
		Status: c.State.Status, Running: c.State.Running, ExitCode: c.State.ExitCode, StartedAt: c.State.StartedAt,
		RestartCount: c.RestartCount, Image: c.Config.Image, ImageID: c.Image, Settings: c.Config.Labels[SettingsLabel],
		Labels: c.Config.Labels}
	for _, b := range c.HostConfig.PortBindings[strconv.Itoa(ContainerPort)+"/tcp"] {
		if p, err := strconv.Atoi(b.HostPort); err == nil && p > 0 {
			ct.HostPort = p
			break
		}
	}
	return ct, nil
}

// ImageID returns the local image ID of ref, or "" when the host does not have it.
func ImageID(ctx context.Context, r Runner, ref string) (string, error) {
	out, code, err := r.Run(ctx, "docker image inspect --format '{{.Id}}' "+Quote(ref)+" 2>&1")
	if err != nil {
		return "", fmt.Errorf("docker image inspect %s: %w", ref, err)
	}
	if code != 0 {
		if strings.Contains(strings.ToLower(out), "no such image") {
			return "", nil
		}
		return "", fmt.Errorf("docker image inspect %s (exit %d): %s", ref, code, Trim(out))
	}
	return strings.TrimSpace(out), nil
}

// Pull pulls ref (docker pull --quiet).
func Pull(ctx context.Context, r Runner, ref string) error {
	out, code, err := r.Run(ctx, "docker pull --quiet "+Quote(ref)+" 2>&1")
	if err != nil {
		return fmt.Errorf("docker pull %s: %w", ref, err)
	}
	if code != 0 {
		return fmt.Errorf("docker pull %s (exit %d): %s", ref, code, OneLine(out))
	}
	return nil
}

// Start starts the container name (docker start; a running one stays as it is).
func Start(ctx context.Context, r Runner, name string) error {
	return verb(ctx, r, "start", name)
}

// Stop stops the container name (docker stop; a stopped one stays as it is). Its
// restart policy does not bring it back until it is started again.
func Stop(ctx context.Context, r Runner, name string) error {
	return verb(ctx, r, "stop", name)
}

// Remove removes the container name, running or not (docker rm --force).
func Remove(ctx context.Context, r Runner, name string) error {
	return verb(ctx, r, "rm --force", name)
}

// verb runs `docker VERB NAME` on the host; a failure is one line with docker's words.
func verb(ctx context.Context, r Runner, verb, name string) error {
	out, code, err := r.Run(ctx, "docker "+verb+" "+Quote(name)+" 2>&1")
	if err != nil {
		return fmt.Errorf("docker %s %s: %w", verb, name, err)
	}
	if code != 0 {
		return fmt.Errorf("docker %s %s (exit %d): %s", verb, name, code, OneLine(out))
	}
	return nil
}

// RunCommand is the command line (each argument shell-quoted) of `docker run ARGS...`.
func RunCommand(args []string) string {
	var b strings.Builder
	b.WriteString("docker run")
	for _, a := range args {
		b.WriteString(" " + Quote(a))
	}
	return b.String()
}

// Run creates and starts a container: `docker run ARGS...` (args name the container
// with --name name; name is only for the error message).
func Run(ctx context.Context, r Runner, name string, args []string) error {
	out, code, err := r.Run(ctx, RunCommand(args)+" 2>&1")
	if err != nil {
		return fmt.Errorf("docker run %s: %w", name, err)
	}
	if code != 0 {
		return fmt.Errorf("docker run %s (exit %d): %s", name, code, Trim(out))
	}
	return nil
}

// LogLine is one line of a container's log, with the time docker stamped it.
type LogLine struct {
	Time time.Time `json:"time"`
	Text string    `json:"text"`
}

// Logs returns the last tail lines of the container's output (stdout and stderr), or,
// when since is not zero, the lines docker stamped after since (tail still bounds them).
func Logs(ctx context.Context, r Runner, name string, tail int, since time.Time) ([]LogLine, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("container name %q: expected letters, digits, '_', '.', '-'", name)
	}
	cmd := fmt.Sprintf("docker logs --timestamps --tail %d", max(tail, 1))
	if !since.IsZero() {
		// docker's --since is inclusive at second granularity: ask a second early and drop
		// what was already shown below.
		cmd += fmt.Sprintf(" --since %d", since.Unix()-1)
	}
	out, code, err := r.Run(ctx, cmd+" "+Quote(name)+" 2>&1")
	if err != nil {
		return nil, fmt.Errorf("docker logs %s: %w", name, err)
	}
	if code != 0 {
		return nil, fmt.Errorf("docker logs %s: %s", name, OneLine(out))
	}
	var lines []LogLine
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		ts, text, _ := strings.Cut(l, " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t, text = time.Time{}, l // not stamped (a docker warning): keep it as is
		}
		if !since.IsZero() && !t.IsZero() && !t.After(since) {
			continue
		}
		lines = append(lines, LogLine{Time: t, Text: text})
	}
	return lines, nil
}
