package server

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/train"
)

// PreviewRequest is POST /api/v1/jobs/{id}/preview: one of the job's checkpoints put
// on a running Scope and loaded there, as `train run --preview` does with each new one.
type PreviewRequest struct {
	// Target is pod:ID (its Scope's LoRA folder over direct SSH), a LoRA folder
	// (ssh://…/models/lora) or an absolute local folder.
	Target   string `json:"target"`
	ScopeURL string `json:"scope_url,omitempty"` // default for a pod: its Scope
	Pipeline string `json:"pipeline,omitempty"`  // default: the one Scope has loaded
	Step     int    `json:"step,omitempty"`      // default: the newest checkpoint in the library
}

// jobPreview runs train.Previewer, the core `train run --preview` calls, and answers
// its train.PreviewResult once the checkpoint is installed and its load asked for.
func (s *Server) jobPreview(r *http.Request) (any, error) {
	var req PreviewRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	target := strings.TrimSpace(req.Target)
	if id, ok := strings.CutPrefix(target, "pod:"); ok {
		target = id
	}
	switch {
	case target == "":
		return nil, errorf(http.StatusBadRequest, "target: give pod:ID, a LoRA folder (ssh://…) or an absolute local folder")
	case !strings.Contains(target, "://") && train.IsPreviewFolder(target) && !filepath.IsAbs(target):
		return nil, errorf(http.StatusBadRequest, "target: a local folder must be an absolute path")
	case req.Step < 0:
		return nil, errorf(http.StatusBadRequest, "step: want a checkpoint's step (0: the newest)")
	}
	j, err := s.job(r)
	if err != nil {
		return nil, err
	}
	name, step, err := s.previewCheckpoint(r.Context(), j.Job.ID, req.Step)
	if err != nil {
		return nil, err
	}
	pv := &train.Previewer{Lib: s.opt.Lib,
		Open: func(ctx context.Context, raw, _ string) (remote.Remote, error) {
			return remote.Open(ctx, raw, s.opt.RemoteEnv)
		},
		Pod: s.previewPod}
	res, err := pv.Preview(r.Context(), train.PreviewInput{Target: target, ScopeURL: req.ScopeURL, Pipeline: req.Pipeline, Step: step, Name: name})
	if err != nil {
		return nil, err
	}
	s.log.Info("job preview", "job", j.Job.ID, "step", step, "folder", res.Folder, "pipeline", res.Pipeline)
	s.metrics.actions.WithLabelValues("job_preview").Inc()
	s.kick()
	return res, nil
}

// previewCheckpoint is the library name and step of the job's checkpoint at step
// (0: the newest one the library holds).
func (s *Server) previewCheckpoint(ctx context.Context, jobID string, step int) (string, int, error) {
	ts, ok := s.opt.Lib.Store.(store.TrainStore)
	if !ok {
		return "", 0, errorf(http.StatusNotImplemented, "this store does not record training jobs")
	}
	cps, err := ts.ListTrainCheckpoints(ctx, jobID)
	if err != nil {
		return "", 0, err
	}
	var name string
	best := -1
	for _, c := range cps {
		if (step != 0 && c.Step != step) || c.Step <= best {
			continue
		}
		if e, err := s.opt.Lib.Store.GetBySHA(ctx, c.SHA256); err == nil {
			name, best = e.Name, c.Step
		}
	}
	switch {
	case name != "":
		return name, best, nil
	case step != 0:
		return "", 0, errorf(http.StatusNotFound, "job %s: no checkpoint of step %d in the library", jobID, step)
	}
	return "", 0, errorf(http.StatusNotFound, "job %s has no checkpoint in the library yet", jobID)
}

// previewPod is a pod as the last poll saw it, with its Scope's URL.
func (s *Server) previewPod(_ context.Context, id string) (train.PodTarget, error) {
	s.mu.RLock()
	st := s.pods[id]
	s.mu.RUnlock()
	if st == nil || id == LocalPod {
		return train.PodTarget{}, errorf(http.StatusNotFound, "pod %q not found", id)
	}
	p := st.view.Pod
	return train.PodTarget{Pod: &p, ScopeURL: s.scopeURL(p)}, nil
}
