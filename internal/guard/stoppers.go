package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
)

// RunPodStopper stops the one RunPod pod the guard runs on (POST /pods/{id}/stop),
// with the pod-scoped key RunPod puts into the pod.
type RunPodStopper struct {
	Client *runpod.Client
	PodID  string
}

// Stop implements Stopper. A pod the API no longer knows is an error, not success:
// the guard says so and tries again (it runs, so the pod exists).
func (s RunPodStopper) Stop(ctx context.Context) error { return s.Client.Stop(ctx, s.PodID) }

func (s RunPodStopper) String() string { return "runpod pod " + s.PodID }

// PodStart reads when the pod last started, on this machine's clock: the API's
// lastStartedAt shifted by the difference between the API's Date header and this
// clock. skew is that difference (API minus local); a note is set when it is large
// enough to matter. A failure leaves the caller to count from its own start.
func PodStart(ctx context.Context, c *runpod.Client, podID string, now time.Time) (started time.Time, skew time.Duration, note string, err error) {
	p, date, err := c.GetDated(ctx, podID)
	if err != nil {
		return time.Time{}, 0, "", err
	}
	started = p.StartedAt
	if started.IsZero() {
		started = p.CreatedAt
	}
	if started.IsZero() {
		return time.Time{}, 0, "", fmt.Errorf("pod %s: the API gave no start time", podID)
	}
	if !date.IsZero() {
		skew = date.Sub(now)
		started = started.Add(-skew)
		if skew > 2*time.Second || skew < -2*time.Second {
			note = fmt.Sprintf("this machine's clock is %s off RunPod's: times are read on RunPod's", skew.Round(time.Second))
		}
	}
	if started.After(now) {
		started = now
	}
	return started, skew, note, nil
}

// DockerStopper stops a container on the machine the guard runs on (an SSH host):
// `docker stop NAME`.
type DockerStopper struct {
	Container string
	Docker    string // default "docker"
}

func (s DockerStopper) docker() string {
	if s.Docker != "" {
		return s.Docker
	}
	return "docker"
}

// Stop implements Stopper.
func (s DockerStopper) Stop(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, s.docker(), "stop", s.Container).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker stop %s: %v: %s", s.Container, err, oneLine(string(out)))
	}
	return nil
}

// Running implements Runner. A container that does not exist (not deployed yet, or
// removed) is not running.
func (s DockerStopper) Running(ctx context.Context) (bool, error) {
	out, err := exec.CommandContext(ctx, s.docker(), "container", "inspect", "-f", "{{.State.Running}}", s.Container).CombinedOutput()
	if err != nil {
		if noSuch(string(out)) {
			return false, nil
		}
		return false, fmt.Errorf("docker inspect %s: %v: %s", s.Container, err, oneLine(string(out)))
	}
	return strings.TrimSpace(string(out)) == "true", nil
}

func noSuch(out string) bool {
	low := strings.ToLower(out)
	return strings.Contains(low, "no such container") || strings.Contains(low, "no such object")
}

// Limits reads the limits the container carries as labels (deploy sets them: see
// provider.LabelIdleStop); ok is false when it carries none.
func (s DockerStopper) Limits(ctx context.Context) (l provider.Limits, ok bool, err error) {
	out, err := exec.CommandContext(ctx, s.docker(), "container", "inspect", "-f", "{{json .Config.Labels}}", s.Container).CombinedOutput()
	if err != nil {
		if noSuch(string(out)) {
			return l, false, nil
		}
		return l, false, fmt.Errorf("docker inspect %s: %v: %s", s.Container, err, oneLine(string(out)))
	}
	var labels map[string]string
	if err := json.Unmarshal(out, &labels); err != nil {
		return l, false, fmt.Errorf("docker inspect %s: labels: %v", s.Container, err)
	}
	l, ok = provider.LimitsFromEnv(provider.LimitsEnvFromLabels(labels))
	return l, ok, nil
}

// StartedAt is when the container last started (docker inspect), on the host's clock.
func (s DockerStopper) StartedAt(ctx context.Context) (time.Time, error) {
	out, err := exec.CommandContext(ctx, s.docker(), "inspect", "-f", "{{.State.StartedAt}}", s.Container).Output()
	if err != nil {
		return time.Time{}, fmt.Errorf("docker inspect %s: %v", s.Container, err)
	}
	return time.Parse(time.RFC3339Nano, strings.TrimSpace(string(out)))
}

func (s DockerStopper) String() string { return "container " + s.Container + " on this host" }

// PodEnv reads the variables RunPod gave the pod: this process's environment first,
// then the container's first process's (/proc/1/environ), which a process started
// over SSH may not have inherited.
func PodEnv(name string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	b, err := os.ReadFile("/proc/1/environ")
	if err != nil {
		return ""
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// LimitsFromEnviron reads the limits from this process's (or the pod's) environment.
func LimitsFromEnviron() (provider.Limits, error) {
	env := map[string]string{}
	for _, k := range []string{provider.EnvIdleStop, provider.EnvMaxHours, provider.EnvStopOnJobEnd} {
		if v := PodEnv(k); v != "" {
			env[k] = v
		}
	}
	l, ok := provider.LimitsFromEnv(env)
	if !ok {
		return l, errors.New("guard: no limits on this pod (" + provider.EnvIdleStop + ", " + provider.EnvMaxHours + ")")
	}
	if l.Problem != "" {
		return l, errors.New("guard: " + l.Problem)
	}
	return l, nil
}
