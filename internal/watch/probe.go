package watch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Probe says whether a pod is busy right now; any probe may say yes. why is a short
// human reason ("GPU 0 at 87%"). An error means the probe could not tell; a probe
// may return busy together with an error (it found activity before failing), and
// busy wins. Busy is called with a context bounded by Watcher.ProbeTimeout, from
// several goroutines at once (one per pod).
type Probe interface {
	Busy(ctx context.Context, pod store.Pod, p provider.Pod) (busy bool, why string, err error)
}

// ProbeFunc adapts a function to Probe.
type ProbeFunc func(ctx context.Context, pod store.Pod, p provider.Pod) (bool, string, error)

// Busy calls f.
func (f ProbeFunc) Busy(ctx context.Context, pod store.Pod, p provider.Pod) (bool, string, error) {
	return f(ctx, pod, p)
}

// GPUProbe says a pod is busy when any of its GPUs reports utilisation of at least
// MinUtil percent. Source returns the pod's GPU source (nvidia-smi over SSH:
// gpu.SMI{Run: …}). A pod that reports no GPUs at all is idle: it does no GPU work
// and is still billed.
type GPUProbe struct {
	Source  func(ctx context.Context, pod provider.Pod) (gpu.Source, error)
	MinUtil int // percent; 0 means 1
}

// Name is the probe's name in reasons.
func (GPUProbe) Name() string { return "gpu" }

// Busy implements Probe.
func (g GPUProbe) Busy(ctx context.Context, _ store.Pod, p provider.Pod) (bool, string, error) {
	if g.Source == nil {
		return false, "", errors.New("no GPU source configured")
	}
	minUtil := g.MinUtil
	if minUtil <= 0 {
		minUtil = 1
	}
	src, err := g.Source(ctx, p)
	if err != nil {
		return false, "", err
	}
	if src == nil {
		return false, "", errors.New("no GPU source for this pod")
	}
	gpus, err := src.GPUs(ctx)
	if err != nil {
		return false, "", err
	}
	if len(gpus) == 0 {
		return false, "no GPUs reported", nil
	}
	top := gpus[0]
	for _, x := range gpus {
		if x.UtilizationPct >= minUtil {
			return true, fmt.Sprintf("GPU %d at %d%% (≥ %d%%)", x.Index, x.UtilizationPct, minUtil), nil
		}
		if x.UtilizationPct > top.UtilizationPct {
			top = x
		}
	}
	return false, fmt.Sprintf("GPU utilisation %d%% (< %d%%)", top.UtilizationPct, minUtil), nil
}

// ScopeProbe asks the pod's Daydream Scope server whether it is working: busy while
// a pipeline is loading, while a streaming session is active, and (for each of
// Pipelines) while that pipeline's models download. See the package documentation
// for exactly which responses it relies on.
type ScopeProbe struct {
	HTTP *http.Client              // default: a client with a 20 s timeout
	URL  func(provider.Pod) string // Scope's base URL for the pod (the provider's: RunPod's proxy)
	// Pipelines, if set: pipeline ids whose model downloads count as activity.
	Pipelines []string
}

// Name is the probe's name in reasons.
func (ScopeProbe) Name() string { return "scope" }

var defaultScopeHTTP = &http.Client{Timeout: 20 * time.Second}

// errNoEndpoint: Scope has no such endpoint (an older Scope): it answered 404, or
// its web UI's index.html (its catch-all GET route serves the UI for unknown paths).
var errNoEndpoint = errors.New("endpoint not found")

// Busy implements Probe.
func (s ScopeProbe) Busy(ctx context.Context, _ store.Pod, p provider.Pod) (bool, string, error) {
	if s.URL == nil {
		return false, "", errors.New("no Scope URL configured")
	}
	base := strings.TrimRight(s.URL(p), "/")
	if base == "" {
		return false, "", errors.New("no Scope URL for this pod")
	}
	var status struct {
		Status       string  `json:"status"`
		PipelineID   *string `json:"pipeline_id"`
		LoadingStage *string `json:"loading_stage"`
	}
	if err := s.get(ctx, base, "/api/v1/pipeline/status", &status); err != nil {
		return false, "", err
	}
	if status.Status == "" {
		return false, "", errors.New("GET /api/v1/pipeline/status: no status in the answer")
	}
	if status.Status == "loading" {
		why := "pipeline loading"
		if status.PipelineID != nil && *status.PipelineID != "" {
			why += " (" + *status.PipelineID + ")"
		}
		if status.LoadingStage != nil && *status.LoadingStage != "" {
			why += ": " + oneLine(*status.LoadingStage)
		}
		return true, why, nil
	}
	var metrics struct {
		Sessions map[string]json.RawMessage `json:"sessions"`
	}
	noSessions := false
	switch err := s.get(ctx, base, "/api/v1/session/metrics", &metrics); {
	case errors.Is(err, errNoEndpoint):
		noSessions = true // Scope before March 2026: sessions cannot be seen
	case err != nil:
		return false, "", err
	case len(metrics.Sessions) > 0:
		return true, fmt.Sprintf("%d active session(s)", len(metrics.Sessions)), nil
	}
	for _, id := range s.Pipelines {
		var ms struct {
			Progress *struct {
				IsDownloading bool `json:"is_downloading"`
			} `json:"progress"`
		}
		if err := s.get(ctx, base, "/api/v1/models/status?pipeline_id="+url.QueryEscape(id), &ms); err != nil {
			return false, "", err
		}
		if ms.Progress != nil && ms.Progress.IsDownloading {
			return true, "downloading models for " + id, nil
		}
	}
	why := "pipeline " + status.Status + ", no session"
	if noSessions {
		why = "pipeline " + status.Status + " (this Scope does not report sessions)"
	}
	return false, why, nil
}

func (s ScopeProbe) get(ctx context.Context, base, path string, out any) error {
	hc := s.HTTP
	if hc == nil {
		hc = defaultScopeHTTP
	}
	op := "GET " + strings.SplitN(path, "?", 2)[0]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return fmt.Errorf("%s: %v", op, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the message already, via op
		}
		return fmt.Errorf("%s: %v", op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %v", op, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %w", op, errNoEndpoint)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s: %s", op, resp.Status)
	case strings.HasPrefix(strings.ToLower(resp.Header.Get("Content-Type")), "text/html"):
		// Scope serves its web UI for every GET path it has no route for.
		return fmt.Errorf("%s: answered with a web page: %w", op, errNoEndpoint)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: not Scope's JSON: %v", op, err)
	}
	return nil
}
