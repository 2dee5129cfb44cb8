package train

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
)

// A preview puts a checkpoint on a running Scope while its job trains: installed in
// Scope's LoRA folder as `lora install` would (Scope's exact form, the manifest) and
// loaded into the running pipeline in place of the job's earlier checkpoints, so the
// user watches the LoRA learn. The CLI (`train run/watch --preview`) and the HTTP API
// both call Previewer.Preview.

// PreviewInput is one checkpoint to preview and where.
type PreviewInput struct {
	// Target is a running Scope's LoRA folder (a sync remote such as
	// ssh://root@host:22/workspace/models/lora, or a local folder) or a pod id.
	Target string `json:"target"`
	// ScopeURL is Scope's HTTP API; for a pod the default is the pod's Scope URL.
	// Without one the checkpoint is installed, not loaded.
	ScopeURL string `json:"scope_url,omitempty"`
	// Pipeline is the pipeline to load; default: the one Scope has loaded.
	Pipeline string `json:"pipeline,omitempty"`
	Step     int    `json:"step"`
	Name     string `json:"name"` // the checkpoint's library entry
}

// Why a preview was installed but not loaded (PreviewResult.NotLoaded).
const (
	PreviewNoScope    = "no Scope URL"
	PreviewNoPipeline = "no pipeline loaded in Scope"
)

// PreviewResult is what a preview did.
type PreviewResult struct {
	Step     int    `json:"step"`
	Name     string `json:"name"`
	PodID    string `json:"pod_id,omitempty"` // when the target was a pod
	Folder   string `json:"folder"`           // the LoRA folder it was installed in (credentials redacted)
	Path     string `json:"path"`             // the installed file as Scope sees it
	ScopeURL string `json:"scope_url,omitempty"`
	// Pipeline is the pipeline now loading with the checkpoint; "" when none was, and
	// NotLoaded says why.
	Pipeline  string `json:"pipeline,omitempty"`
	NotLoaded string `json:"not_loaded,omitempty"`
	Kept      int    `json:"kept_loras"` // other LoRAs the pipeline had, loaded again beside it
}

// PodTarget is what a pod offers a preview: the pod (its SSH port and environment)
// and where its Scope answers ("" when unknown).
type PodTarget struct {
	Pod      *provider.Pod
	ScopeURL string
}

// Previewer previews checkpoints. Its dependencies come from the caller, so the
// CLI and the server resolve pods and open remotes their own way.
type Previewer struct {
	Lib *library.Library
	// Open opens a LoRA folder; podID is the pod it is on ("" for a folder given
	// directly), for host keys trusted per pod.
	Open func(ctx context.Context, raw, podID string) (remote.Remote, error)
	// Pod resolves a pod id (or name) to the pod; nil: targets must be folders.
	Pod      func(ctx context.Context, ref string) (PodTarget, error)
	Progress progress.Reporter
}

// previewPlace is where a preview goes: the LoRA folder (a sync remote), the path
// Scope sees it under, and Scope's URL ("" when not known).
type previewPlace struct {
	folder, scopeDir, scopeURL, podID string
}

// IsPreviewFolder says whether target names a folder (a URL or a path) rather than
// a pod id.
func IsPreviewFolder(target string) bool {
	return strings.Contains(target, "://") || strings.ContainsAny(target, `/\`) || target == "."
}

func (p *Previewer) place(ctx context.Context, in PreviewInput) (previewPlace, error) {
	pl := previewPlace{scopeURL: in.ScopeURL}
	if IsPreviewFolder(in.Target) {
		pl.folder, pl.scopeDir = in.Target, in.Target
		if u, err := url.Parse(in.Target); err == nil && u.Scheme != "" && u.Scheme != "file" {
			pl.scopeDir = u.Path
		} else if abs, err := filepath.Abs(strings.TrimPrefix(in.Target, "file://")); err == nil {
			pl.scopeDir = abs
		}
		return pl, nil
	}
	if p.Pod == nil {
		return pl, fmt.Errorf("preview target %q: want a LoRA folder (ssh://…, a path)", in.Target)
	}
	pt, err := p.Pod(ctx, in.Target)
	if err != nil {
		return pl, err
	}
	pod := pt.Pod
	base, direct := pod.SSHURL()
	if !direct {
		return pl, fmt.Errorf("pod %s has no public SSH port (status %s)", pod.ID, pod.Status)
	}
	dir, err := PodLoRADir(pod)
	if err != nil {
		return pl, err
	}
	if pl.scopeURL == "" {
		pl.scopeURL = pt.ScopeURL
	}
	pl.folder, pl.scopeDir, pl.podID = strings.TrimSuffix(base, "/")+dir, dir, pod.ID
	return pl, nil
}

// PodLoRADir is Scope's LoRA folder on pod p: the one its environment names
// (DAYDREAM_SCOPE_LORA_DIR or SCOPE_LORA_DIR, as deploy records them), else
// deploy.DefaultLoRADir.
func PodLoRADir(p *provider.Pod) (string, error) {
	for _, k := range []string{"DAYDREAM_SCOPE_LORA_DIR", "SCOPE_LORA_DIR"} {
		v, ok := p.Env[k]
		if !ok {
			continue
		}
		if v == "" || v == provider.SecretValue || !path.IsAbs(v) {
			return "", fmt.Errorf("pod %s: env %s is %q; want an absolute path (Scope's LoRA folder)", p.ID, k, v)
		}
		return path.Clean(v), nil
	}
	return deploy.DefaultLoRADir, nil
}

// Preview installs checkpoint in.Name on the target and loads Scope's pipeline with
// it, in place of the job's earlier checkpoints (other LoRAs stay loaded).
func (p *Previewer) Preview(ctx context.Context, in PreviewInput) (*PreviewResult, error) {
	if in.Target == "" {
		return nil, errors.New("preview: no target (a pod id or a LoRA folder)")
	}
	if in.Name == "" {
		return nil, errors.New("preview: no checkpoint name")
	}
	pl, err := p.place(ctx, in)
	if err != nil {
		return nil, err
	}
	res := &PreviewResult{Step: in.Step, Name: in.Name, PodID: pl.podID, Folder: remote.Redact(pl.folder), ScopeURL: pl.scopeURL}
	var sc *scope.Client
	pipeline := in.Pipeline
	var keep []scope.LoRALoad
	if pl.scopeURL != "" {
		sc = &scope.Client{Base: pl.scopeURL}
		st, err := sc.PipelineStatus(ctx)
		if err != nil {
			return nil, fmt.Errorf("Scope at %s: %w", pl.scopeURL, err)
		}
		if pipeline == "" && (st.Status == "loaded" || st.Status == "loading") {
			pipeline = st.PipelineID
		}
		if st.PipelineID == pipeline {
			for _, l := range st.LoadedLoRAs {
				if !SameJobLoRA(path.Base(l.Path), in.Name) {
					keep = append(keep, scope.LoRALoad{Path: l.Path, Scale: l.Scale})
				}
			}
		}
	}
	pr, err := p.Lib.Prepare(ctx, in.Name, library.InstallOptions{Pipeline: pipeline})
	if err != nil {
		return nil, err
	}
	load := scope.LoRALoad{Path: path.Join(pl.scopeDir, pr.File), Scale: 1}
	res.Path = load.Path
	r, err := p.Open(ctx, pl.folder, pl.podID)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if _, err := lorasync.Sync(ctx, p.Lib, r, lorasync.Options{Names: []string{in.Name}, Pipeline: pipeline, Progress: p.Progress}); err != nil {
		return nil, err
	}
	switch {
	case sc == nil:
		res.NotLoaded = PreviewNoScope
	case pipeline == "":
		res.NotLoaded = PreviewNoPipeline
	default:
		if err := sc.LoadPipeline(ctx, pipeline, append([]scope.LoRALoad{load}, keep...), nil); err != nil {
			return nil, fmt.Errorf("loading %s: %w", pipeline, err)
		}
		res.Pipeline, res.Kept = pipeline, len(keep)
	}
	return res, nil
}

// NewestCollected is the newest checkpoint res collected by its call, or nil.
func NewestCollected(res *CollectResult) *Collected {
	var newest *Collected
	for i := range res.Checkpoints {
		if c := &res.Checkpoints[i]; c.New && (newest == nil || c.Step > newest.Step) {
			newest = c
		}
	}
	return newest
}

// SameJobLoRA says whether file is a checkpoint of the same job as name
// (NAME_000000250 and its installed forms), which a newer preview replaces.
func SameJobLoRA(file, name string) bool {
	stem := name
	if i := strings.LastIndexByte(name, '_'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			stem = name[:i]
		}
	}
	rest, ok := strings.CutPrefix(file, stem)
	return ok && (strings.HasPrefix(rest, "_") || strings.HasPrefix(rest, "."))
}
