package scope

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/httpx"
)

// Client talks to a Daydream Scope server's HTTP API.
type Client struct {
	Base string       // e.g. http://host:8000 or https://{pod}-8000.proxy.runpod.net
	HTTP *http.Client // default: a client with a 30 s timeout
}

// Health is Scope's GET /health answer.
type Health struct {
	Status    string  `json:"status"`
	Version   string  `json:"version"`
	GitCommit string  `json:"git_commit"`
	UptimeS   float64 `json:"uptime_s"` // from server_start_time (or an uptime field); 0 if unknown
}

// Pipeline statuses Scope reports.
const (
	StatusNotLoaded = "not_loaded"
	StatusLoading   = "loading"
	StatusLoaded    = "loaded"
	StatusError     = "error"
)

// PipelineStatus is Scope's GET /api/v1/pipeline/status answer.
type PipelineStatus struct {
	Status       string       `json:"status"` // not_loaded | loading | loaded | error
	PipelineID   string       `json:"pipeline_id"`
	LoadedLoRAs  []LoadedLoRA `json:"loaded_loras"`
	LoadingStage string       `json:"loading_stage"`
	Error        string       `json:"error"` // always empty in current Scope
}

// LoadedLoRA is one of the adapters a loaded pipeline carries.
type LoadedLoRA struct {
	Path  string  `json:"path"`
	Scale float64 `json:"scale"`
}

// LoRALoad is one LoRA of a pipeline load request.
type LoRALoad struct {
	Path  string  `json:"path"`
	Scale float64 `json:"scale"`
}

// InstalledLoRA is one .safetensors file Scope lists in GET /api/v1/loras.
// SHA256 comes from Scope's manifest and is empty for files it has no entry for.
type InstalledLoRA struct {
	Name     string      `json:"name"`
	Path     string      `json:"path"`
	SizeMB   float64     `json:"size_mb"`
	Folder   string      `json:"folder,omitempty"`
	SHA256   string      `json:"sha256,omitempty"`
	Source   string      `json:"source,omitempty"` // provenance.source, if any
	ReadOnly bool        `json:"read_only,omitempty"`
	Prov     *Provenance `json:"provenance,omitempty"`
}

// MergeModePermanent is Scope's default lora_merge_mode.
const MergeModePermanent = "permanent_merge"

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

func (c *Client) hc() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// errNotFound: Scope has no such endpoint (404, or its web UI for an unknown GET path).
var errNotFound = errors.New("endpoint not found")

// do sends one request and decodes a JSON answer into out (if non-nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	op := method + " " + strings.SplitN(path, "?", 2)[0]
	base := strings.TrimRight(c.Base, "/")
	if base == "" {
		return fmt.Errorf("%s: no Scope URL", op)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s: %v", op, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return fmt.Errorf("%s: %v", op, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	html := strings.HasPrefix(strings.ToLower(resp.Header.Get("Content-Type")), "text/html")
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %w", op, errNotFound)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		if d := detail(data); d != "" {
			return fmt.Errorf("%s: %s: %s", op, resp.Status, d)
		}
		return fmt.Errorf("%s: %s", op, resp.Status)
	case html && method == http.MethodGet:
		return fmt.Errorf("%s: answered with a web page: %w", op, errNotFound)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: not Scope's JSON: %v", op, err)
	}
	return nil
}

// detail extracts FastAPI's {"detail": …} error text, on one line.
func detail(data []byte) string {
	var d struct {
		Detail json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(data, &d) != nil || len(d.Detail) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(d.Detail, &s) == nil {
		return oneLine(s)
	}
	return oneLine(string(d.Detail))
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 500 {
		s = s[:497] + "..."
	}
	return s
}

// rawString reads a JSON string (or number) field leniently.
func rawString(m map[string]json.RawMessage, key string) string {
	r, ok := m[key]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(r, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(r, &n) == nil {
		return n.String()
	}
	return ""
}

func rawFloat(m map[string]json.RawMessage, key string) (float64, bool) {
	r, ok := m[key]
	if !ok {
		return 0, false
	}
	var f float64
	if json.Unmarshal(r, &f) == nil {
		return f, true
	}
	var s string
	if json.Unmarshal(r, &s) == nil {
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return f, true
		}
	}
	return 0, false
}

// Health asks GET /health.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var m map[string]json.RawMessage
	if err := c.do(ctx, http.MethodGet, "/health", nil, &m); err != nil {
		return nil, err
	}
	h := &Health{Status: rawString(m, "status"), Version: rawString(m, "version"), GitCommit: rawString(m, "git_commit")}
	if h.Status == "" {
		return nil, errors.New("GET /health: no status in the answer (not Scope?)")
	}
	if u, ok := rawFloat(m, "uptime_s"); ok {
		h.UptimeS = u
	} else if u, ok := rawFloat(m, "uptime"); ok {
		h.UptimeS = u
	} else if st, ok := rawFloat(m, "server_start_time"); ok && st > 0 {
		start := time.Unix(0, int64(st*1e9))
		if u := time.Since(start).Seconds(); u > 0 {
			h.UptimeS = u
		}
	}
	return h, nil
}

// Poll intervals: from pollMin, doubling up to pollMax.
var (
	pollMin = 250 * time.Millisecond
	pollMax = 2 * time.Second
)

// poll is the schedule of WaitHealthy's and WaitLoaded's polls (httpx.Do): again and
// again until ctx ends, waiting from pollMin, doubling (jittered) up to pollMax; only
// errPending is polled again.
func poll() httpx.Policy {
	return httpx.Policy{Backoff: httpx.Backoff{Min: pollMin, Max: pollMax}, Retryable: func(err error) bool { return errors.Is(err, errPending) }}
}

// errPending: not there yet, poll again.
var errPending = errors.New("not yet")

// WaitHealthy polls GET /health with backoff (250 ms doubling to 2 s) until it
// answers "healthy" (or any status), ctx ends or timeout passes.
func (c *Client) WaitHealthy(ctx context.Context, timeout time.Duration) (*Health, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	h, err := httpx.Do(ctx, poll(), func(int) (*Health, error) {
		h, err := c.Health(ctx)
		if err != nil {
			last = err
			return nil, errPending
		}
		return h, nil
	})
	if err != nil {
		return nil, fmt.Errorf("Scope at %s not healthy after %s: %v", c.Base, timeout, last)
	}
	return h, nil
}

// PipelineStatus asks GET /api/v1/pipeline/status.
func (c *Client) PipelineStatus(ctx context.Context) (*PipelineStatus, error) {
	var raw struct {
		Status       string  `json:"status"`
		PipelineID   *string `json:"pipeline_id"`
		LoadingStage *string `json:"loading_stage"`
		Error        *string `json:"error"`
		Adapters     []struct {
			Path  string   `json:"path"`
			Scale *float64 `json:"scale"`
		} `json:"loaded_lora_adapters"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/pipeline/status", nil, &raw); err != nil {
		return nil, err
	}
	if raw.Status == "" {
		return nil, errors.New("GET /api/v1/pipeline/status: no status in the answer")
	}
	st := &PipelineStatus{Status: raw.Status, LoadedLoRAs: []LoadedLoRA{}}
	if raw.PipelineID != nil {
		st.PipelineID = *raw.PipelineID
	}
	if raw.LoadingStage != nil {
		st.LoadingStage = *raw.LoadingStage
	}
	if raw.Error != nil {
		st.Error = *raw.Error
	}
	for _, a := range raw.Adapters {
		l := LoadedLoRA{Path: a.Path, Scale: 1}
		if a.Scale != nil {
			l.Scale = *a.Scale
		}
		st.LoadedLoRAs = append(st.LoadedLoRAs, l)
	}
	return st, nil
}

// LoadPipeline asks Scope to load pipelineID with loras (POST
// /api/v1/pipeline/load). params are further load_params (height, width, seed,
// …); lora_merge_mode defaults to permanent_merge. Loading is asynchronous:
// follow it with WaitLoaded.
func (c *Client) LoadPipeline(ctx context.Context, pipelineID string, loras []LoRALoad, params map[string]any) error {
	if pipelineID == "" {
		return errors.New("load pipeline: no pipeline id")
	}
	lp := map[string]any{}
	maps.Copy(lp, params)
	if len(loras) > 0 {
		lp["loras"] = loras
	}
	if _, ok := lp["lora_merge_mode"]; !ok {
		lp["lora_merge_mode"] = MergeModePermanent
	}
	body := map[string]any{"pipeline_ids": []string{pipelineID}, "load_params": lp}
	return c.do(ctx, http.MethodPost, "/api/v1/pipeline/load", body, nil)
}

// notStartedGrace: how long WaitLoaded accepts not_loaded before it has seen
// loading (Scope starts the load in a background task).
var notStartedGrace = 10 * time.Second

// WaitLoaded polls the pipeline status until it is loaded. A load that fails
// (status error, or back to not_loaded after loading: Scope's status carries
// no reason) returns an error whose text ends with the relevant lines of
// Scope's log tail. Polls back off from 250 ms to 2 s; timeout bounds the wait.
func (c *Client) WaitLoaded(ctx context.Context, timeout time.Duration) (*PipelineStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	sawLoading := false
	var last *PipelineStatus
	var lastErr error
	st, err := httpx.Do(ctx, poll(), func(int) (*PipelineStatus, error) {
		st, err := c.PipelineStatus(ctx)
		switch {
		case err != nil:
			lastErr = err
		case st.Status == StatusLoaded:
			return st, nil
		case st.Status == StatusLoading:
			sawLoading = true
			last, lastErr = st, nil
		case st.Status == StatusError,
			st.Status == StatusNotLoaded && (sawLoading || time.Since(start) > notStartedGrace):
			return st, c.loadFailed(ctx, st)
		default:
			last, lastErr = st, nil
		}
		return nil, errPending
	})
	if err == nil || !errors.Is(err, ctx.Err()) {
		return st, err
	}
	msg := fmt.Sprintf("pipeline not loaded after %s", timeout)
	if last != nil {
		msg += " (status " + last.Status
		if last.LoadingStage != "" {
			msg += ": " + oneLine(last.LoadingStage)
		}
		msg += ")"
	}
	if lastErr != nil {
		msg += ": " + lastErr.Error()
	}
	return last, errors.New(msg)
}

// ErrLoadFailed is wrapped by WaitLoaded's error when Scope failed to load the pipeline.
var ErrLoadFailed = errors.New("pipeline load failed")

func (c *Client) loadFailed(ctx context.Context, st *PipelineStatus) error {
	reason := oneLine(st.Error)
	if reason == "" {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		lines, err := c.LogsTail(lctx, 50)
		if err != nil {
			reason = "no reason: " + err.Error()
		} else {
			reason = FailureReason(lines)
		}
	}
	if reason == "" {
		reason = "no reason in Scope's log"
	}
	id := ""
	if st.PipelineID != "" {
		id = " " + st.PipelineID
	}
	return fmt.Errorf("%w%s (status %s): %s", ErrLoadFailed, id, st.Status, reason)
}

var (
	reException = regexp.MustCompile(`\b[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:?`)
	reErrorLog  = regexp.MustCompile(`(?i)\b(error|critical|failed|failure|traceback)\b`)
)

// FailureReason picks the lines of a log tail that explain a failure (the
// last error log lines and exception lines, at most 3; indented traceback
// lines are skipped) and joins them on one line; the last non-blank line if
// none look relevant.
func FailureReason(lines []string) string {
	var picked []string
	for i := len(lines) - 1; i >= 0 && len(picked) < 3; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || l != strings.TrimLeft(lines[i], " \t") || strings.HasPrefix(l, "Traceback (most recent call last)") || strings.HasPrefix(l, "File \"") {
			continue
		}
		if reException.MatchString(l) || reErrorLog.MatchString(l) {
			if len(picked) == 0 || picked[0] != oneLine(l) {
				picked = append([]string{oneLine(l)}, picked...)
			}
		}
	}
	if len(picked) == 0 {
		for i := len(lines) - 1; i >= 0; i-- {
			if l := strings.TrimSpace(lines[i]); l != "" {
				return oneLine(l)
			}
		}
		return ""
	}
	return oneLine(strings.Join(picked, " | "))
}

// LogTail is an answer of GET /api/v1/logs/tail.
type LogTail struct {
	Lines     []string
	Offset    int64 // byte offset for the next poll
	HasOffset bool  // Scope reported an offset (it supports since_offset)
}

// LogsTail returns the last lines (1–1000) of Scope's current log.
func (c *Client) LogsTail(ctx context.Context, lines int) ([]string, error) {
	t, err := c.LogsSince(ctx, lines, 0)
	if err != nil {
		return nil, err
	}
	return t.Lines, nil
}

// LogsSince returns log lines written after byte offset since (0: the last
// lines) and the offset to poll from next.
func (c *Client) LogsSince(ctx context.Context, lines int, since int64) (*LogTail, error) {
	lines = max(1, min(lines, 1000))
	q := url.Values{"lines": {strconv.Itoa(lines)}}
	if since > 0 {
		q.Set("since_offset", strconv.FormatInt(since, 10))
	}
	var raw struct {
		Lines  []string `json:"lines"`
		Offset *int64   `json:"offset"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/logs/tail?"+q.Encode(), nil, &raw); err != nil {
		return nil, err
	}
	t := &LogTail{Lines: raw.Lines}
	if t.Lines == nil {
		t.Lines = []string{}
	}
	if raw.Offset != nil {
		t.Offset, t.HasOffset = *raw.Offset, true
	}
	return t, nil
}

// LoRAs lists the LoRA files Scope sees (GET /api/v1/loras).
func (c *Client) LoRAs(ctx context.Context) ([]InstalledLoRA, error) {
	var raw struct {
		Files []struct {
			Name       string          `json:"name"`
			Path       string          `json:"path"`
			SizeMB     float64         `json:"size_mb"`
			Folder     *string         `json:"folder"`
			SHA256     *string         `json:"sha256"`
			Provenance json.RawMessage `json:"provenance"`
			ReadOnly   bool            `json:"read_only"`
		} `json:"lora_files"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/loras", nil, &raw); err != nil {
		return nil, err
	}
	out := make([]InstalledLoRA, 0, len(raw.Files))
	for _, f := range raw.Files {
		l := InstalledLoRA{Name: f.Name, Path: f.Path, SizeMB: f.SizeMB, ReadOnly: f.ReadOnly}
		if f.Folder != nil {
			l.Folder = *f.Folder
		}
		if f.SHA256 != nil {
			l.SHA256 = strings.ToLower(*f.SHA256)
		}
		if len(f.Provenance) > 0 && !isNull(f.Provenance) {
			var p Provenance
			if json.Unmarshal(f.Provenance, &p) == nil {
				l.Prov, l.Source = &p, p.Source
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// IsNotFound says whether err means Scope has no such endpoint (an older Scope).
func IsNotFound(err error) bool { return errors.Is(err, errNotFound) }
