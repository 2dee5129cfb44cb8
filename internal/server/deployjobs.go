package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
)

// DeployJob is a deploy running in the background (POST /api/v1/deploys answers at
// once with it; GET /api/v1/deploys/{id} follows it; DELETE cancels it).
type DeployJob struct {
	ID     string `json:"id"`
	Target string `json:"target"`           // host URL, pod id, or "new pod (GPU)"
	State  string `json:"state"`            // running | done | failed | canceled
	Phase  string `json:"phase"`            // what it does now (the last step when it ended)
	Status int    `json:"status,omitempty"` // the HTTP status its error maps to
	// LoRA transfer of the deploy, in bytes.
	Done     int64                `json:"done_bytes"`
	Total    int64                `json:"total_bytes"`
	Plan     []deploy.Step        `json:"plan,omitempty"` // the dry run made before it started
	Warnings []string             `json:"warnings,omitempty"`
	Error    string               `json:"error,omitempty"`
	Result   *deploy.DeployResult `json:"result,omitempty"`
	Started  time.Time            `json:"started_at"`
	Ended    *time.Time           `json:"ended_at,omitempty"`

	cancel context.CancelFunc
}

// Deploy job states.
const (
	JobRunning  = "running"
	JobDone     = "done"
	JobFailed   = "failed"
	JobCanceled = "canceled"
)

// keepDeployJobs is how many ended deploy jobs are remembered.
const keepDeployJobs = 50

type deployJobs struct {
	mu  sync.Mutex
	n   int
	all map[string]*DeployJob
}

func (j *deployJobs) snapshot(id string) (DeployJob, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	x, ok := j.all[id]
	if !ok {
		return DeployJob{}, false
	}
	c := *x
	c.Warnings = append([]string(nil), x.Warnings...)
	return c, true
}

// list is every remembered job, newest first.
func (j *deployJobs) list() []DeployJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]DeployJob, 0, len(j.all))
	for _, x := range j.all {
		c := *x
		c.Warnings = append([]string(nil), x.Warnings...)
		out = append(out, c)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	return out
}

// forget drops the oldest ended jobs beyond keepDeployJobs (under mu).
func (j *deployJobs) forget() {
	var ended []*DeployJob
	for _, x := range j.all {
		if x.State != JobRunning {
			ended = append(ended, x)
		}
	}
	if len(ended) <= keepDeployJobs {
		return
	}
	sort.Slice(ended, func(a, b int) bool { return ended[a].ID < ended[b].ID })
	for _, x := range ended[:len(ended)-keepDeployJobs] {
		delete(j.all, x.ID)
	}
}

func (j *deployJobs) set(x *DeployJob, f func(*DeployJob)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(x)
}

// deployStatus maps a deploy error to its HTTP status and one-line message.
func (s *Server) deployStatus(err error, in deploy.DeployInput) (int, string) {
	var ie *deploy.InputError
	var re *deploy.RefusedError
	var le *deploy.LookupError
	switch {
	case errors.Is(err, context.Canceled):
		return 499, "canceled"
	case errors.Is(err, deploy.ErrCannotCreate):
		return http.StatusNotImplemented, "this server cannot create pods: run scopectl deploy --new, or deploy to an existing pod"
	case errors.As(err, &ie):
		return http.StatusBadRequest, ie.Msg
	case errors.As(err, &re):
		return http.StatusConflict, re.Error()
	case errors.As(err, &le) && errors.Is(err, provider.ErrNotFound):
		return http.StatusNotFound, fmt.Sprintf("pod %q not found", in.Pod)
	}
	return http.StatusBadGateway, "deploy failed: " + oneLine(s.red.Redact(err.Error()))
}

// createDeploy checks a deploy with a dry run of the same core (bad input, a pod that
// does not exist, a refused plan: answered at once, nothing changed) and then runs it in
// the background: 202 with the job, whose GET shows its phase, progress and result.
// A dry run is answered with the plan itself.
func (s *Server) createDeploy(w http.ResponseWriter, r *http.Request) {
	job, status, err := s.startDeploy(r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	if job == nil {
		s.writeJSON(w, http.StatusOK, status)
		return
	}
	w.Header().Set("Location", "/api/v1/deploys/"+job.ID)
	s.writeJSON(w, http.StatusAccepted, job)
}

func (s *Server) startDeploy(r *http.Request) (*DeployJob, any, error) {
	var req DeployRequest
	if err := decode(r, &req); err != nil {
		return nil, nil, err
	}
	in, err := req.input()
	if err != nil {
		return nil, nil, err
	}
	d := s.deployer()
	if (in.Pod != "" || in.New) && d.RunPod == nil {
		return nil, nil, errorf(http.StatusServiceUnavailable, "RUNPOD_API_KEY is not set: RunPod pods cannot be deployed to")
	}
	dry := in
	dry.DryRun = true
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	plan, err := d.Deploy(ctx, dry)
	if err != nil {
		st, msg := s.deployStatus(err, in)
		return nil, nil, errorf(st, "%s", msg)
	}
	if in.DryRun {
		return nil, plan, nil
	}
	if in.New && plan.Reused == "" && d.CreatePod == nil {
		return nil, nil, errorf(http.StatusNotImplemented, "this server cannot create pods: run scopectl deploy --new, or deploy to an existing pod")
	}
	return s.runDeploy(d, in, req, plan.Steps), nil, nil
}

func deployTarget(req DeployRequest) string {
	switch {
	case req.Host != "":
		return remote.Redact(req.Host)
	case req.Pod != "":
		return "pod " + req.Pod
	}
	return "new pod (" + req.GPU + ")"
}

// runDeploy starts the deploy in the background on a copy of the deployer whose hooks
// report the job's phase and whose progress reports the LoRA transfer.
func (s *Server) runDeploy(d *deploy.Deployer, in deploy.DeployInput, req DeployRequest, plan []deploy.Step) *DeployJob {
	ctx, cancel := context.WithCancel(context.Background())
	s.deploys.mu.Lock()
	s.deploys.n++
	job := &DeployJob{ID: fmt.Sprintf("d%06d", s.deploys.n), Target: s.red.Redact(deployTarget(req)), State: JobRunning,
		Phase: "starting", Plan: plan, Started: time.Now().UTC(), cancel: cancel}
	if s.deploys.all == nil {
		s.deploys.all = map[string]*DeployJob{}
	}
	s.deploys.all[job.ID] = job
	snap := *job
	s.deploys.mu.Unlock()
	phase := func(p string) {
		s.deploys.set(job, func(j *DeployJob) {
			if j.State == JobRunning {
				j.Phase = s.red.Redact(p)
			}
		})
	}
	dd := *d // hooks of this job only
	if f := d.BudgetGate; f != nil {
		dd.BudgetGate = func(ctx context.Context, cs provider.CreateSpec, in deploy.DeployInput) error {
			phase("checking the day's budget")
			return f(ctx, cs, in)
		}
	}
	if f := d.CreatePod; f != nil {
		dd.CreatePod = func(ctx context.Context, cs provider.CreateSpec, in deploy.DeployInput) (*provider.Pod, *store.Pod, error) {
			phase("creating a pod on " + cs.GPUType)
			p, rec, err := f(ctx, cs, in)
			if err == nil {
				phase("waiting for pod " + p.ID + " to run")
			}
			return p, rec, err
		}
	}
	if f := d.OpenRemote; f != nil {
		dd.OpenRemote = func(ctx context.Context, target, kh string) (remote.Remote, error) {
			phase("connecting to " + remote.Redact(target))
			return f(ctx, target, kh)
		}
	}
	if f := d.InstallGuard; f != nil {
		dd.InstallGuard = func(ctx context.Context, p *provider.Pod) (*deploy.GuardInfo, error) {
			phase("installing the guard on pod " + p.ID)
			return f(ctx, p)
		}
	}
	dd.Warn = func(msg string) {
		s.deploys.set(job, func(j *DeployJob) {
			if len(j.Warnings) < 20 {
				j.Warnings = append(j.Warnings, oneLine(s.red.Redact(msg)))
			}
		})
	}
	pw := s.deployProgress(job, phase)
	dd.Progress = progress.Reporter{Mode: progress.JSON, W: pw}
	dd.Reporter = progress.Reporter{Mode: progress.JSON, W: pw}
	switch {
	case in.Host != "":
		phase("applying the container on " + remote.Redact(in.Host))
	case in.Pod != "":
		phase("making pod " + in.Pod + " match")
	default:
		phase("planning the pod")
	}
	s.metrics.actions.WithLabelValues("deploy").Inc()
	go func() {
		defer cancel()
		defer pw.Close()
		res, err := dd.Deploy(ctx, in)
		now := time.Now().UTC()
		s.deploys.mu.Lock()
		job.Ended, job.cancel = &now, nil
		switch {
		case err == nil:
			job.State, job.Result, job.Phase = JobDone, res, "deployed"
		case ctx.Err() != nil:
			job.State, job.Status, job.Phase = JobCanceled, 499, "canceled"
			job.Error = oneLine(s.red.Redact(err.Error()))
		default:
			job.State = JobFailed
			job.Status, job.Error = s.deployStatus(err, in)
		}
		state := job.State
		s.deploys.forget()
		s.deploys.mu.Unlock()
		s.log.Info("deploy ended", "job", job.ID, "state", state)
		s.kick()
	}()
	return &snap
}

// deployProgress reads the deploy's NDJSON progress and retry events into the job.
func (s *Server) deployProgress(job *DeployJob, phase func(string)) *io.PipeWriter {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev struct {
				Event   string `json:"event"`
				Op      string `json:"op"`
				Item    string `json:"item"`
				Done    int64  `json:"done"`
				Total   int64  `json:"total"`
				Attempt int    `json:"attempt"`
				Reason  string `json:"reason"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			switch {
			case ev.Event == "retry":
				phase(fmt.Sprintf("%s: attempt %d failed (%s), retrying", ev.Op, ev.Attempt, oneLine(ev.Reason)))
			case ev.Op == "sync" && ev.Event == "done":
				s.deploys.set(job, func(j *DeployJob) { j.Done, j.Total = ev.Done, max(ev.Total, ev.Done) })
				phase("waiting for Scope (health, pipeline)")
			case ev.Op == "sync":
				s.deploys.set(job, func(j *DeployJob) { j.Done, j.Total = ev.Done, ev.Total })
				phase("sending LoRAs")
			}
		}
		io.Copy(io.Discard, pr)
	}()
	return pw
}

func (s *Server) getDeploy(r *http.Request) (any, error) {
	id := r.PathValue("id")
	j, ok := s.deploys.snapshot(id)
	if !ok {
		return nil, errorf(http.StatusNotFound, "deploy %q not found", id)
	}
	return j, nil
}

// cancelDeploy stops a running deploy: its context ends, and the core cleans up as it
// does on Ctrl-C (a pod it created is terminated unless keep).
func (s *Server) cancelDeploy(r *http.Request) (any, error) {
	id := r.PathValue("id")
	s.deploys.mu.Lock()
	j, ok := s.deploys.all[id]
	var cancel context.CancelFunc
	if ok && j.State == JobRunning {
		cancel = j.cancel
		j.Phase = "canceling"
	}
	s.deploys.mu.Unlock()
	if !ok {
		return nil, errorf(http.StatusNotFound, "deploy %q not found", id)
	}
	if cancel == nil {
		return nil, errorf(http.StatusConflict, "deploy %s has ended (%s)", id, j.State)
	}
	cancel()
	s.metrics.actions.WithLabelValues("deploy_cancel").Inc()
	// the job ends when the core has cleaned up; wait a little for it
	for i := 0; i < 100; i++ {
		if x, _ := s.deploys.snapshot(id); x.State != JobRunning {
			return x, nil
		}
		select {
		case <-r.Context().Done():
			return nil, r.Context().Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	x, _ := s.deploys.snapshot(id)
	return x, nil
}
