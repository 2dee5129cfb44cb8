package runpod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/provider"
)

// checkID refuses pod ids that could change the request path.
func (c *Client) checkID(op, id string) error {
	if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) {
		return c.errorf("%s: invalid pod id %q", op, id)
	}
	return nil
}

func (c *Client) podURL(id, suffix string) string {
	return c.apiURL + "/pods/" + url.PathEscape(id) + suffix
}

// Get returns one pod (with ?includeMachine=true, which is what carries its GPU type).
func (c *Client) Get(ctx context.Context, id string) (*provider.Pod, error) {
	op := "get pod " + id
	if err := c.checkID(op, id); err != nil {
		return nil, err
	}
	resp, _, err := c.do(ctx, http.MethodGet, c.podURL(id, "?includeMachine=true"), nil)
	if err != nil {
		return nil, c.classify(op, err, "")
	}
	p, err := decodePod(resp.Body, c.red)
	if err != nil {
		return nil, c.errorf("%s: %v", op, err)
	}
	return p, nil
}

// List returns every pod of the account.
func (c *Client) List(ctx context.Context) ([]provider.Pod, error) {
	resp, _, err := c.do(ctx, http.MethodGet, c.apiURL+"/pods?includeMachine=true", nil)
	if err != nil {
		return nil, c.classify("list pods", err, "")
	}
	pods, err := decodePods(resp.Body, c.red)
	if err != nil {
		return nil, c.errorf("list pods: %v", err)
	}
	return pods, nil
}

// Stop stops a pod (POST /pods/{id}/stop). Stopping a stopped pod is not an error.
func (c *Client) Stop(ctx context.Context, id string) error {
	op := "stop pod " + id
	if err := c.checkID(op, id); err != nil {
		return err
	}
	if _, _, err := c.do(ctx, http.MethodPost, c.podURL(id, "/stop"), nil); err != nil {
		return c.classify(op, err, "")
	}
	return nil
}

// Start resumes a stopped pod (POST /pods/{id}/start). A pod's GPUs are on its
// host: when the host has none free, ErrNoCapacity names the pod's GPU type.
func (c *Client) Start(ctx context.Context, id string) error {
	op := "start pod " + id
	if err := c.checkID(op, id); err != nil {
		return err
	}
	_, _, err := c.do(ctx, http.MethodPost, c.podURL(id, "/start"), nil)
	if err == nil {
		return nil
	}
	gpu := ""
	var ae *apiError
	if errors.As(err, &ae) && capacityMessage(ae.Msg) {
		if p, gerr := c.Get(ctx, id); gerr == nil && p.GPUType != "" {
			gpu = fmt.Sprintf("%d x %s on pod %s's host", max(p.GPUCount, 1), p.GPUType, id)
		}
	}
	return c.classify(op, err, gpu)
}

// Terminate deletes a pod (DELETE /pods/{id}): billing ends, its volume is gone.
// ErrNotFound if there is no such pod — unless an earlier attempt of this call may
// have deleted it, which is success.
func (c *Client) Terminate(ctx context.Context, id string) error {
	op := "terminate pod " + id
	if err := c.checkID(op, id); err != nil {
		return err
	}
	_, wasAmbiguous, err := c.do(ctx, http.MethodDelete, c.podURL(id, ""), nil)
	if err != nil {
		var ae *apiError
		if wasAmbiguous && errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return nil
		}
		return c.classify(op, err, "")
	}
	return nil
}

// FindByTag returns the pods (not terminated) that carry request id tag — in env
// SCOPECTL_REQUEST_ID, or as the name scopectl gives them — oldest first.
func (c *Client) FindByTag(ctx context.Context, tag string) ([]provider.Pod, error) {
	return c.findByTag(ctx, tag, "")
}

func (c *Client) findByTag(ctx context.Context, tag, name string) ([]provider.Pod, error) {
	pods, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []provider.Pod
	for _, p := range pods {
		if p.Status == provider.StatusTerminated {
			continue
		}
		if p.Tag == tag || (p.Tag == "" && (p.Name == name || strings.HasSuffix(p.Name, "-"+tag))) {
			out = append(out, p)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// podName is the pod's name: "<name>-<request id>" (name defaults to "scopectl"),
// at most 191 characters (RunPod's limit).
func podName(name, reqID string) string {
	name = strings.TrimSpace(name)
	if name == "" {
		name = "scopectl"
	}
	if strings.HasSuffix(name, "-"+reqID) {
		name = strings.TrimSuffix(name, "-"+reqID)
	}
	const maxLen = 191
	if room := maxLen - len(reqID) - 1; len(name) > room {
		name = name[:room]
	}
	return name + "-" + reqID
}

// createBody is the subset of RunPod's v1 create schema scopectl sends.
type createBody struct {
	Name              string            `json:"name"`
	ImageName         string            `json:"imageName"`
	ComputeType       string            `json:"computeType"`
	CloudType         string            `json:"cloudType"`
	GPUTypeIDs        []string          `json:"gpuTypeIds"`
	GPUCount          int               `json:"gpuCount"`
	Interruptible     bool              `json:"interruptible"`
	ContainerDiskInGb int               `json:"containerDiskInGb,omitempty"`
	VolumeInGb        int               `json:"volumeInGb"` // always sent: RunPod's default is 20 GB, billed
	VolumeMountPath   string            `json:"volumeMountPath,omitempty"`
	NetworkVolumeID   string            `json:"networkVolumeId,omitempty"`
	Ports             []string          `json:"ports,omitempty"`
	SupportPublicIP   bool              `json:"supportPublicIp,omitempty"`
	Env               map[string]string `json:"env"`
	AllowedCUDA       []string          `json:"allowedCudaVersions,omitempty"`
}

// buildCreate validates spec and builds the body. The body holds secret values:
// it goes to RunPod and nowhere else.
func (c *Client) buildCreate(spec provider.CreateSpec) (*createBody, error) {
	if err := provider.CheckRequestID(spec.RequestID); err != nil {
		return nil, c.errorf("create pod: %v", err)
	}
	if strings.TrimSpace(spec.GPUType) == "" {
		return nil, c.errorf("create pod: no GPU type")
	}
	if strings.TrimSpace(spec.Image) == "" {
		return nil, c.errorf("create pod: no image")
	}
	cloud := strings.ToUpper(spec.Cloud)
	if cloud == "" {
		cloud = "SECURE"
	}
	if cloud != "SECURE" && cloud != "COMMUNITY" {
		return nil, c.errorf("create pod: cloud %q is neither SECURE nor COMMUNITY", spec.Cloud)
	}
	count := spec.GPUCount
	if count == 0 {
		count = 1
	}
	if count < 0 || spec.VolumeGB < 0 || spec.ContainerDiskGB < 0 || spec.MaxPrice < 0 || math.IsNaN(spec.MaxPrice) {
		return nil, c.errorf("create pod: negative GPU count, size or price")
	}
	b := &createBody{
		Name: podName(spec.Name, spec.RequestID), ImageName: spec.Image, ComputeType: "GPU",
		CloudType: cloud, GPUTypeIDs: []string{spec.GPUType}, GPUCount: count,
		ContainerDiskInGb: spec.ContainerDiskGB, VolumeInGb: spec.VolumeGB,
		NetworkVolumeID: spec.NetworkVolumeID, Ports: slices.Clone(spec.Ports), AllowedCUDA: slices.Clone(spec.AllowedCUDA),
		Env: map[string]string{},
	}
	if spec.VolumeGB > 0 || spec.NetworkVolumeID != "" {
		b.VolumeMountPath = "/workspace"
	}
	for k, v := range spec.Env {
		b.Env[k] = v
	}
	var secretNames []string
	for k, s := range spec.SecretEnv {
		if _, dup := spec.Env[k]; dup {
			return nil, c.errorf("create pod: %s is both a plain and a secret variable", k)
		}
		c.addSecret(s)
		b.Env[k] = s.Reveal() // into the request body for RunPod only: the pod needs it
		secretNames = append(secretNames, k)
	}
	for _, k := range []string{provider.EnvRequestID, provider.EnvSecretNames} {
		if _, set := b.Env[k]; set {
			return nil, c.errorf("create pod: %s is scopectl's to set", k)
		}
	}
	b.Env[provider.EnvRequestID] = spec.RequestID
	if len(secretNames) > 0 {
		sort.Strings(secretNames)
		b.Env[provider.EnvSecretNames] = strings.Join(secretNames, ",")
	}
	if key := strings.TrimSpace(spec.SSHPublicKey); key != "" {
		if strings.Contains(key, "PRIVATE KEY") {
			return nil, c.errorf("create pod: SSHPublicKey holds a private key")
		}
		// RunPod's images append PUBLIC_KEY to root's authorized_keys; RunPod documents
		// SSH_PUBLIC_KEY as the per-pod override of the account's keys.
		b.Env["PUBLIC_KEY"] = key
		b.Env["SSH_PUBLIC_KEY"] = key
		if !slices.Contains(b.Ports, "22/tcp") {
			b.Ports = append(b.Ports, "22/tcp")
		}
	}
	for _, p := range b.Ports {
		if strings.HasSuffix(p, "/tcp") {
			b.SupportPublicIP = true // direct SSH needs a public IP
		}
	}
	return b, nil
}

func (c *Client) lockRequest(id string) func() {
	m, _ := c.creating.LoadOrStore(id, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// Create makes a pod, idempotently on spec.RequestID.
//
// RunPod has no idempotency key and no tags, so the request id goes into the pod's
// env (SCOPECTL_REQUEST_ID) and name ("<name>-<id>"), and Create:
//  1. lists pods and returns the one already carrying the id, if any;
//  2. if spec.MaxPrice is set, asks GraphQL for the price of the GPUs and refuses
//     with ErrPriceTooHigh above it;
//  3. POSTs /pods. A 429 or a failure to connect is retried (nothing was applied).
//     A failure that may have been applied — no answer (timeout, reset), or a 5xx,
//     which RunPod's create has returned after creating the pod — is followed by
//     listing pods for the tag until SettleWindow has passed; only if the pod has
//     not appeared by then is the POST sent again. At most MaxAttempts POSTs.
//  4. if the pod's real hourly cost is above spec.MaxPrice (the machine can cost
//     more than the lowest quoted price), terminates it and returns ErrPriceTooHigh.
//
// A retried or crashed Create (same RequestID, any process) thus finds the pod
// instead of making a second one. When the outcome cannot be established (context
// cancelled, attempts exhausted after an ambiguous failure), the error matches
// provider.ErrOutcomeUnknown: a pod may exist, and calling Create again with the
// same RequestID is the way to find it.
func (c *Client) Create(ctx context.Context, spec provider.CreateSpec) (*provider.Pod, error) {
	b, err := c.buildCreate(spec)
	if err != nil {
		return nil, err
	}
	defer c.lockRequest(spec.RequestID)()
	gpuDesc := fmt.Sprintf("%d x %s (%s cloud)", b.GPUCount, spec.GPUType, b.CloudType)
	op := "create pod " + b.Name

	if found, err := c.findByTag(ctx, spec.RequestID, b.Name); err != nil {
		return nil, c.errorf("%s: looking for an earlier attempt: %w", op, err)
	} else if len(found) > 0 {
		return &found[0], nil
	}

	if spec.MaxPrice > 0 {
		price, err := c.podPrice(ctx, spec.GPUType, b.GPUCount, b.CloudType == "SECURE")
		if err != nil {
			return nil, c.errorf("%s: checking the price: %w", op, err)
		}
		if price > spec.MaxPrice+1e-9 {
			return nil, c.errorf("%s: %w: %s costs $%.3f/hr, above the maximum $%.3f/hr", op, provider.ErrPriceTooHigh, gpuDesc, price, spec.MaxPrice)
		}
	}

	body, err := json.Marshal(b)
	if err != nil {
		return nil, c.errorf("%s: %v", op, err)
	}
	pod, err := c.postCreate(ctx, op, body, spec.RequestID, b.Name, gpuDesc)
	if err != nil {
		return nil, err
	}
	if pod.GPUType == "" {
		pod.GPUType = spec.GPUType
	}
	if pod.Tag == "" {
		pod.Tag = spec.RequestID
	}
	if spec.MaxPrice > 0 && pod.CostPerHr > spec.MaxPrice+1e-9 {
		// Terminate with a context of its own: the caller's may be about to end, and
		// this pod bills until it is gone.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if terr := c.Terminate(tctx, pod.ID); terr != nil {
			return pod, c.errorf("%s: %w: pod %s costs $%.3f/hr, above the maximum $%.3f/hr, and terminating it failed (%v): terminate it by hand",
				op, provider.ErrPriceTooHigh, pod.ID, pod.CostPerHr, spec.MaxPrice, terr)
		}
		return nil, c.errorf("%s: %w: the machine RunPod chose costs $%.3f/hr, above the maximum $%.3f/hr; pod %s terminated",
			op, provider.ErrPriceTooHigh, pod.CostPerHr, spec.MaxPrice, pod.ID)
	}
	return pod, nil
}

// postCreate sends POST /pods until it is answered or the pod is found.
func (c *Client) postCreate(ctx context.Context, op string, body []byte, tag, name, gpuDesc string) (*provider.Pod, error) {
	uncertain := false // some earlier POST may have been applied
	pol := c.policy(op)
	pol.Retryable = func(err error) bool { return !errors.As(err, new(*settled)) && retryable(err) }
	p, err := httpx.Do(ctx, pol, func(int) (*provider.Pod, error) {
		resp, err := c.once(ctx, http.MethodPost, c.apiURL+"/pods", body, c.crTimeout)
		if err == nil {
			p, derr := decodePod(resp.Body, c.red)
			if derr != nil {
				// Created (2xx) but unreadable: the pod exists, so find it.
				if p, ferr := c.settleFind(ctx, tag, name); ferr == nil && p != nil {
					return p, nil
				}
				return nil, &settled{c.errorf("%s: %w: RunPod answered %d but %v", op, provider.ErrOutcomeUnknown, resp.Status, derr)}
			}
			return p, nil
		}
		if ctx.Err() != nil { // the caller gave up, perhaps mid-create
			return nil, &settled{c.createGaveUp(op, true, ctx.Err())}
		}
		if !retryable(err) {
			return nil, &settled{c.classify(op, err, gpuDesc)}
		}
		if !ambiguous(err) {
			return nil, err // 429, or never connected: nothing was applied
		}
		uncertain = true
		p, ferr := c.settleFind(ctx, tag, name)
		if p != nil {
			return p, nil
		}
		if ferr != nil {
			// Cannot tell whether the pod exists: creating again could make a second.
			return nil, &settled{c.errorf("%s: %w: %v, then listing pods failed: %v", op, provider.ErrOutcomeUnknown, err, ferr)}
		}
		return nil, err
	})
	var s *settled
	var g *httpx.GaveUpError
	switch {
	case err == nil:
		return p, nil
	case errors.As(err, &s):
		return nil, s.err
	case errors.As(err, &g):
		return nil, c.createGaveUp(op, uncertain, &exhaustedError{attempts: g.Attempts, last: g.Err})
	}
	return nil, c.createGaveUp(op, uncertain, err) // the wait before a retry ended with ctx
}

// settled is the final outcome of a POST /pods attempt: it is not retried.
type settled struct{ err error }

func (s *settled) Error() string { return s.err.Error() }

func (c *Client) createGaveUp(op string, uncertain bool, err error) error {
	if uncertain {
		return c.errorf("%s: %w (a pod may exist; retry with the same request id to find it): %w", op, provider.ErrOutcomeUnknown, err)
	}
	return c.classify(op, err, "")
}

// settleFind lists pods for the tag until the settle window has passed: a create
// the server is still processing, or one whose pod the list shows late, appears.
func (c *Client) settleFind(ctx context.Context, tag, name string) (*provider.Pod, error) {
	deadline := time.Now().Add(c.settle)
	for n := 0; ; n++ {
		found, err := c.findByTag(ctx, tag, name)
		if err != nil {
			return nil, err
		}
		if len(found) > 0 {
			return &found[0], nil
		}
		wait := c.backoff(n, nil)
		if left := time.Until(deadline); left <= 0 {
			return nil, nil
		} else if wait > left {
			wait = left
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}
