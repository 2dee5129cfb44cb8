package deploy

// Scope on a RunPod pod. A RunPod pod is itself a container: the pod runs the Scope
// image, with Scope's directories on the pod's volume at /workspace (the container disk
// is wiped whenever the pod stops or restarts), port 8000 behind RunPod's HTTP proxy
// and 22 for direct SSH. Deploying to an existing pod compares its image, environment
// and ports with the wanted ones and updates only what differs (an update restarts the
// pod), then starts it if it is stopped; a pod that already matches is left alone.

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// PodWorkspace is where a pod's volume is mounted; PodPorts the ports a Scope pod
// exposes: Scope through the HTTP proxy, SSH directly.
const PodWorkspace = "/workspace"

// PodPorts are the ports a Scope pod exposes.
var PodPorts = []string{fmt.Sprintf("%d/http", ContainerPort), "22/tcp"}

// PodSpec is the wanted Scope deployment on a pod.
type PodSpec struct {
	Image     string            // default daydreamlive/scope:main
	LoRADir   string            // Scope's LoRA dir, default /workspace/models/lora; must be under /workspace
	Env       map[string]string // extra plain variables
	SecretEnv map[string]secret.Secret
	// GPUs is the pod's GPU count: CUDA_VISIBLE_DEVICES names them all (0,…,GPUs-1)
	// unless Env sets it. 0: ApplyPod takes the count from the pod.
	GPUs int
}

// NormalizePod fills defaults and validates s. Errors never contain secret values.
func NormalizePod(s PodSpec) (PodSpec, error) {
	if s.LoRADir == "" {
		s.LoRADir = DefaultLoRADir
	}
	if !path.IsAbs(s.LoRADir) || !strings.HasPrefix(path.Clean(s.LoRADir)+"/", PodWorkspace+"/") || path.Clean(s.LoRADir) == PodWorkspace {
		return s, fmt.Errorf("deploy: LoRA dir %q is not under %s: on a RunPod pod only the volume at %s survives a stop or restart (the container disk is wiped), so LoRAs anywhere else would be lost", s.LoRADir, PodWorkspace, PodWorkspace)
	}
	// The rest is what a Docker deployment checks too.
	ns, err := Normalize(Spec{Image: s.Image, LoRADir: s.LoRADir, Env: s.Env, SecretEnv: s.SecretEnv})
	if err != nil {
		return s, err
	}
	for _, k := range []string{provider.EnvRequestID, provider.EnvSecretNames} {
		_, plain := ns.Env[k]
		_, sec := ns.SecretEnv[k]
		if plain || sec {
			return s, fmt.Errorf("deploy: env %s is set by scopectl; do not set it", k)
		}
	}
	s.Image, s.LoRADir = ns.Image, ns.LoRADir
	return s, nil
}

// PodEnv is the plain environment of a Scope pod (s normalized): Scope's directory
// variables on the volume, and s.Env.
func (s PodSpec) PodEnv() map[string]string {
	env := map[string]string{}
	for _, kv := range containerEnv(Spec{LoRADir: s.LoRADir, Env: s.Env}) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if _, set := env["CUDA_VISIBLE_DEVICES"]; !set && s.GPUs > 0 {
		ids := make([]string, s.GPUs)
		for i := range ids {
			ids[i] = strconv.Itoa(i)
		}
		env["CUDA_VISIBLE_DEVICES"] = strings.Join(ids, ",")
	}
	return env
}

// CreateSpec fills c (GPU, cloud, sizes, price limit …) with what makes the pod run
// Scope: image, ports, environment, and the volume at /workspace (50 GB unless c
// names a size or a network volume). s must be normalized.
func (s PodSpec) CreateSpec(c provider.CreateSpec) provider.CreateSpec {
	c.Image = s.Image
	for _, p := range PodPorts {
		if !slices.Contains(c.Ports, p) {
			c.Ports = append(c.Ports, p)
		}
	}
	env := map[string]string{}
	for k, v := range c.Env {
		env[k] = v
	}
	for k, v := range s.PodEnv() {
		env[k] = v
	}
	c.Env = env
	if len(s.SecretEnv) > 0 {
		sec := map[string]secret.Secret{}
		for k, v := range c.SecretEnv {
			sec[k] = v
		}
		for k, v := range s.SecretEnv {
			sec[k] = v
		}
		c.SecretEnv = sec
	}
	if c.VolumeGB == 0 && c.NetworkVolumeID == "" {
		c.VolumeGB = 50
	}
	return c
}

// UpdateSpec is what an existing pod must have to run s. s must be normalized.
func (s PodSpec) UpdateSpec() provider.UpdateSpec {
	return provider.UpdateSpec{Image: s.Image, Ports: slices.Clone(PodPorts), Env: s.PodEnv(), SecretEnv: s.SecretEnv}
}

// ApplyPod makes pod id run s: "update" when its image, environment or ports differ
// (the pod restarts), "start" when it is stopped, "keep" when it already runs s.
// With dryRun it only says so. A second ApplyPod of the same spec is one "keep".
func ApplyPod(ctx context.Context, p provider.Provider, id string, s PodSpec, dryRun bool) ([]Step, *provider.Pod, error) {
	s, err := NormalizePod(s)
	if err != nil {
		return nil, nil, err
	}
	pod, err := p.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if pod.Status == provider.StatusTerminated {
		return nil, pod, fmt.Errorf("deploy: pod %s is terminated: %w", id, provider.ErrNotFound)
	}
	if s.GPUs == 0 {
		s.GPUs = pod.GPUCount
	}
	var steps []Step
	changes, err := p.Update(ctx, id, s.UpdateSpec(), dryRun)
	if err != nil {
		return nil, pod, err
	}
	if len(changes) > 0 {
		why := make([]string, len(changes))
		for i, c := range changes {
			why[i] = c.String()
		}
		reason := "pod " + id + ": " + strings.Join(why, "; ")
		if pod.Status != provider.StatusExited {
			reason += " (the pod restarts)"
		}
		steps = append(steps, Step{"update", reason})
	}
	if pod.Status == provider.StatusExited {
		if !dryRun {
			if err := p.Start(ctx, id); err != nil {
				return steps, pod, err
			}
		}
		steps = append(steps, Step{"start", "pod " + id + " is " + pod.Status})
	}
	if len(steps) == 0 {
		steps = append(steps, Step{"keep", "pod " + id + " runs " + s.Image + " with the wanted settings"})
	}
	return steps, pod, nil
}

// ErrPodNotReady is wrapped by WaitPod's error when the pod did not come up in time.
var ErrPodNotReady = errors.New("pod not ready")

// WaitPod polls the pod until it is RUNNING and, with needSSH, has a public SSH
// address; it returns the pod as read then (read the address from it: it changes on
// every restart). A pod that stops or disappears meanwhile is an error at once.
func WaitPod(ctx context.Context, p provider.Provider, id string, needSSH bool, timeout time.Duration) (*provider.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 250 * time.Millisecond
	var last *provider.Pod
	var lastErr error
	for {
		pod, err := p.Get(ctx, id)
		switch {
		case errors.Is(err, provider.ErrNotFound):
			return nil, err
		case err != nil:
			lastErr = err
		default:
			last, lastErr = pod, nil
			_, _, hasSSH := pod.SSH()
			switch {
			case pod.Status == provider.StatusRunning && (hasSSH || !needSSH):
				return pod, nil
			case pod.Status == provider.StatusExited || pod.Status == provider.StatusTerminated:
				return pod, fmt.Errorf("deploy: pod %s is %s while waiting for it to run", id, pod.Status)
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			detail := ""
			switch {
			case last == nil && lastErr != nil:
				detail = ": " + lastErr.Error()
			case last != nil && last.Status != provider.StatusRunning:
				detail = " (status " + last.Status + ")"
			case last != nil:
				detail = " (running, but no public IP with a mapped port 22 for SSH)"
			}
			return last, fmt.Errorf("deploy: pod %s: %w after %s%s", id, ErrPodNotReady, timeout, detail)
		case <-t.C:
		}
		delay = min(delay*2, 2*time.Second)
	}
}
