package runpod

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/daydreamlive/scopectl/internal/provider"
)

// updateBody is the subset of RunPod's v1 update schema (PATCH /pods/{id}:
// containerDiskInGb, containerRegistryAuthId, dockerEntrypoint, dockerStartCmd, env,
// globalNetworking, imageName, locked, name, ports, volumeInGb, volumeMountPath)
// scopectl sends. env replaces the pod's whole environment (runpodctl's `pod update`
// merges the pod's env into it for that reason), ports the whole list.
type updateBody struct {
	ImageName string            `json:"imageName,omitempty"`
	Ports     []string          `json:"ports,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// rawPod is the part of a pod Update compares, with its env unmasked. It never
// leaves this package.
type rawPod struct {
	image string
	ports []string
	env   map[string]string
}

func (c *Client) getRaw(ctx context.Context, op, id string) (*rawPod, error) {
	resp, _, err := c.do(ctx, http.MethodGet, c.podURL(id, ""), nil)
	if err != nil {
		return nil, c.classify(op, err, "")
	}
	var w wirePod
	if err := json.Unmarshal(resp.Body, &w); err != nil {
		return nil, c.errorf("%s: decode pod: %v", op, shortJSONError(err))
	}
	if strings.EqualFold(string(w.DesiredStatus), provider.StatusTerminated) {
		return nil, c.errorf("%s: %w (pod %s is terminated)", op, provider.ErrNotFound, id)
	}
	env := map[string]string{}
	for k, v := range w.Env {
		env[k] = v
	}
	// The pod's own secret values go back to RunPod in the update body: scrub them
	// from anything this client says.
	masked := provider.MaskEnv(env, nil, c.red)
	for k, v := range masked {
		if v == provider.SecretValue {
			c.addSecretString(env[k])
		}
	}
	return &rawPod{image: firstNonEmpty(string(w.ImageName), string(w.Image)), ports: slices.Clone([]string(w.Ports)), env: env}, nil
}

// Update makes pod id have spec's image, ports and environment (PATCH /pods/{id}),
// merging into what the pod has: variables and ports spec does not name are kept,
// secret values included. A running pod restarts with the new settings. Only the
// fields that differ are sent, and nothing at all when nothing differs.
func (c *Client) Update(ctx context.Context, id string, spec provider.UpdateSpec, dryRun bool) ([]provider.Change, error) {
	op := "update pod " + id
	if err := c.checkID(op, id); err != nil {
		return nil, err
	}
	for _, k := range []string{provider.EnvRequestID, provider.EnvSecretNames} {
		_, plain := spec.Env[k]
		_, sec := spec.SecretEnv[k]
		if plain || sec {
			return nil, c.errorf("%s: %s is scopectl's to set", op, k)
		}
	}
	for k, s := range spec.SecretEnv {
		if _, dup := spec.Env[k]; dup {
			return nil, c.errorf("%s: %s is both a plain and a secret variable", op, k)
		}
		if !s.IsSet() {
			return nil, c.errorf("%s: secret variable %s is empty", op, k)
		}
		c.addSecret(s)
	}
	if strings.ContainsAny(spec.Image, " \t\r\n") {
		return nil, c.errorf("%s: image %q is not an image reference", op, spec.Image)
	}
	cur, err := c.getRaw(ctx, op, id)
	if err != nil {
		return nil, err
	}
	var changes []provider.Change
	var body updateBody
	if spec.Image != "" && spec.Image != cur.image {
		changes = append(changes, provider.Change{Field: "image", From: cur.image, To: spec.Image})
		body.ImageName = spec.Image
	}
	ports := slices.Clone(cur.ports)
	for _, p := range spec.Ports {
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	if len(ports) != len(cur.ports) {
		changes = append(changes, provider.Change{Field: "ports", From: strings.Join(cur.ports, ","), To: strings.Join(ports, ",")})
		body.Ports = ports
	}

	env := make(map[string]string, len(cur.env)+len(spec.Env)+len(spec.SecretEnv))
	for k, v := range cur.env {
		env[k] = v
	}
	shown := provider.MaskEnv(cur.env, nil, c.red)
	envChanged := false
	set := func(k, v string, secretValue bool) {
		if old, ok := cur.env[k]; ok && old == v {
			return
		}
		to := v
		if secretValue || provider.IsSecretEnvName(k) || c.red.Redact(v) != v {
			to = provider.SecretValue
		}
		changes = append(changes, provider.Change{Field: "env " + k, From: shown[k], To: to})
		env[k] = v
		envChanged = true
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		set(k, spec.Env[k], false)
	}
	secretNames := map[string]bool{}
	for _, n := range strings.Split(cur.env[provider.EnvSecretNames], ",") {
		if n = strings.TrimSpace(n); n != "" {
			secretNames[n] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(spec.SecretEnv)) {
		set(k, spec.SecretEnv[k].Reveal(), true)
		secretNames[k] = true
	}
	if len(secretNames) > 0 {
		names := slices.Sorted(maps.Keys(secretNames))
		set(provider.EnvSecretNames, strings.Join(names, ","), false)
	}
	if envChanged {
		body.Env = env
	}
	if len(changes) == 0 || dryRun {
		return changes, nil
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, c.errorf("%s: %v", op, err)
	}
	// The body holds whole values, so sending it twice is the same as once.
	if _, _, err := c.do(ctx, http.MethodPatch, c.podURL(id, ""), data); err != nil {
		return nil, c.classify(op, err, "")
	}
	return changes, nil
}

// DefaultProxyURL is RunPod's HTTP proxy: {pod} and {port} are replaced by the pod id
// and the pod's HTTP port. EnvProxyURL overrides it (tests point it at a local proxy).
const (
	DefaultProxyURL = "https://{pod}-{port}.proxy.runpod.net"
	EnvProxyURL     = "SCOPECTL_RUNPOD_PROXY_URL"
)

// checkProxyTemplate accepts a template that yields an https URL (or plain http to
// a loopback address) for a sample pod.
func checkProxyTemplate(t string) error {
	if !strings.Contains(t, "{pod}") || !strings.Contains(t, "{port}") {
		return fmt.Errorf("runpod: proxy URL template %q must contain {pod} and {port}", t)
	}
	u, err := url.Parse(expandProxy(t, "podid0000", 8000))
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("runpod: proxy URL template %q does not make a URL without credentials, query or fragment", t)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("runpod: proxy URL template %q: only https (plain http only to a loopback address)", t)
}

func expandProxy(t, pod string, port int) string {
	return strings.TrimRight(strings.NewReplacer("{pod}", pod, "{port}", strconv.Itoa(port)).Replace(t), "/")
}

// ProxyURL is the URL of the pod's HTTP port through RunPod's proxy, e.g.
// https://abc123-8000.proxy.runpod.net.
func (c *Client) ProxyURL(podID string, port int) string {
	return expandProxy(c.proxyURL, url.PathEscape(podID), port)
}
