package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/pods"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/train"
)

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	m.Handle("GET /metrics", s.metricsHandler())
	m.HandleFunc("GET /{$}", s.page)
	m.HandleFunc("GET /assets/{file}", s.asset)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.logout)
	m.HandleFunc("GET /api/v1/session", s.api(s.session))

	m.HandleFunc("GET /api/v1/loras", s.cachedLoRAs)
	m.HandleFunc("GET /api/v1/loras/{ref}", s.api(s.getLoRA))
	m.HandleFunc("GET /api/v1/loras/{ref}/samples/{sha}", s.loraSample)
	m.HandleFunc("POST /api/v1/loras/{ref}/sync", s.api(s.syncLoRA))

	m.HandleFunc("GET /api/v1/pods", s.api(s.listPodsAPI))
	m.HandleFunc("GET /api/v1/pods/{id}", s.api(s.getPod))
	m.HandleFunc("GET /api/v1/pods/{id}/gpu", s.api(s.podGPU))
	m.HandleFunc("GET /api/v1/pods/{id}/logs", s.podLogStream)
	m.HandleFunc("GET /api/v1/pods/{id}/frame", s.podFrame)
	m.HandleFunc("POST /api/v1/pods/{id}/{action}", s.api(s.podAction))

	m.HandleFunc("GET /api/v1/deploys", s.api(s.listDeploys))
	m.HandleFunc("POST /api/v1/deploys", s.createDeploy)
	m.HandleFunc("GET /api/v1/deploys/{id}", s.api(s.getDeploy))
	m.HandleFunc("DELETE /api/v1/deploys/{id}", s.api(s.cancelDeploy))

	m.HandleFunc("GET /api/v1/jobs", s.api(s.listJobs))
	m.HandleFunc("GET /api/v1/jobs/{id}", s.api(s.getJob))
	m.HandleFunc("GET /api/v1/jobs/{id}/loss", s.api(s.jobLoss))
	m.HandleFunc("GET /api/v1/jobs/{id}/log", s.api(s.jobLog))
	m.HandleFunc("GET /api/v1/jobs/{id}/log/stream", s.jobLogStream)
	m.HandleFunc("GET /api/v1/jobs/{id}/samples", s.api(s.jobSamples))
	m.HandleFunc("GET /api/v1/jobs/{id}/samples/{file}", s.jobSampleFile)
	m.HandleFunc("POST /api/v1/jobs/{id}/preview", s.api(s.jobPreview))
	m.HandleFunc("POST /api/v1/jobs/{id}/{action}", s.api(s.jobAction))

	m.HandleFunc("GET /api/v1/transfers", s.api(s.listTransfers))

	m.HandleFunc("GET /api/v1/cost", s.api(s.getCost))
	m.HandleFunc("DELETE /api/v1/transfers/{id}", s.api(s.cancelTransfer))

	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.writeJSON(w, http.StatusNotFound, apiError{"no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeJSON(w, http.StatusNotFound, apiError{"not found"})
	})
	s.mux = m
}

// List is one page of a listing. Next is the After of the next page ("" : the last).
type List[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
	Note  string `json:"note,omitempty"`
}

const defaultLimit = 100

// paging reads ?limit=&after=.
func paging(r *http.Request) (store.Page, error) {
	p := store.Page{Limit: defaultLimit, After: r.URL.Query().Get("after")}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxPage {
			return p, errorf(http.StatusBadRequest, "limit %q: want a number from 1 to %d", v, store.MaxPage)
		}
		p.Limit = n
	}
	if len(p.After) > 1024 {
		return p, errorf(http.StatusBadRequest, "after: too long")
	}
	return p, nil
}

// page cuts items (ordered by key) to p.
func page[T any](items []T, key func(T) string, p store.Page) List[T] {
	out := List[T]{Items: []T{}}
	for _, it := range items {
		if p.After != "" && key(it) <= p.After {
			continue
		}
		if len(out.Items) == p.Limit {
			out.Next = key(out.Items[len(out.Items)-1])
			break
		}
		out.Items = append(out.Items, it)
	}
	return out
}

// Pager is implemented by stores that list LoRAs a page at a time.
type Pager interface {
	ListLoRAsPage(ctx context.Context, f store.Filter, p store.Page) ([]store.LoRA, bool, error)
}

func notFound(err error, what string) error {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return errorf(http.StatusNotFound, "%s not found", what)
	case errors.Is(err, store.ErrAmbiguous):
		return errorf(http.StatusBadRequest, "%s is ambiguous: give more of it", what)
	}
	return err
}

func (s *Server) listLoRAs(r *http.Request) (any, error) {
	p, err := paging(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	f := store.Filter{Base: q.Get("base"), Family: q.Get("family"), Name: q.Get("name")}
	pg, ok := s.opt.Lib.Store.(Pager)
	if !ok {
		all, err := s.opt.Lib.Store.ListLoRAs(r.Context(), f)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "%s", err.Error())
		}
		return page(all, func(l store.LoRA) string { return l.Name }, p), nil
	}
	ls, more, err := pg.ListLoRAsPage(r.Context(), f, p)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%s", err.Error())
	}
	out := List[store.LoRA]{Items: ls}
	if more && len(ls) > 0 {
		out.Next = ls[len(ls)-1].Name
	}
	return out, nil
}

// LoRADetail is one library entry with where it is installed and its samples.
type LoRADetail struct {
	store.LoRA
	Installs []store.Install `json:"installs"`
	Samples  []store.Sample  `json:"samples"`
}

func (s *Server) lora(r *http.Request) (store.LoRA, error) {
	ref := r.PathValue("ref")
	e, err := s.opt.Lib.Store.GetLoRA(r.Context(), ref)
	if err != nil {
		return e, notFound(err, "LoRA "+strconv.Quote(ref))
	}
	return e, nil
}

func (s *Server) getLoRA(r *http.Request) (any, error) {
	e, err := s.lora(r)
	if err != nil {
		return nil, err
	}
	d := LoRADetail{LoRA: e, Installs: []store.Install{}, Samples: []store.Sample{}}
	ins, err := s.opt.Lib.Installs(r.Context()) // the folders' ownership records
	if err != nil {
		return nil, err
	}
	for _, in := range ins {
		if in.SourceSHA256 == e.SHA256 {
			d.Installs = append(d.Installs, in)
		}
	}
	sm, err := s.opt.Lib.Store.ListSamples(r.Context(), e.SHA256)
	if err != nil {
		return nil, err
	}
	d.Samples = append(d.Samples, sm...)
	return d, nil
}

// mediaType is the content type of a sample or image file, by its extension.
func mediaType(name string) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg":
		return "image/jpeg"
	case ".png":
		return "image/png"
	case ".webp":
		return "image/webp"
	case ".gif":
		return "image/gif"
	case ".mp4":
		return "video/mp4"
	case ".webm":
		return "video/webm"
	}
	if t := mime.TypeByExtension(filepath.Ext(name)); strings.HasPrefix(t, "image/") || strings.HasPrefix(t, "video/") {
		return t
	}
	return "application/octet-stream"
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, p, name string) {
	f, err := os.Open(p)
	if err != nil {
		s.writeErr(w, notFound(err, "file"))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		s.writeErr(w, errorf(http.StatusNotFound, "file not found"))
		return
	}
	w.Header().Set("Content-Type", mediaType(name))
	w.Header().Set("Cache-Control", "private, max-age=3600")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

func (s *Server) loraSample(w http.ResponseWriter, r *http.Request) {
	e, err := s.lora(r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	sm, err := s.opt.Lib.Store.ListSamples(r.Context(), e.SHA256)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	want := r.PathValue("sha")
	for _, x := range sm {
		if x.SHA256 == want {
			s.serveFile(w, r, x.Path, x.Name)
			return
		}
	}
	s.writeErr(w, errorf(http.StatusNotFound, "sample not found"))
}

// decode reads a small JSON body into v; unknown fields are refused.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "send application/json, not %q", ct)
		}
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, "bad JSON body: %s", err.Error())
	}
	return nil
}

// SyncRequest is POST /api/v1/loras/{ref}/sync: send the LoRA to a target, in the
// form Scope applies exactly, as `scopectl sync NAME --to TARGET` does.
type SyncRequest struct {
	// To is a LoRA folder (a local path, ssh://, s3://, https:// agent) or pod:ID for
	// a pod's /workspace/models/lora over direct SSH.
	To       string `json:"to"`
	Pipeline string `json:"pipeline,omitempty"`
	Force    bool   `json:"force,omitempty"`
}

func (s *Server) syncLoRA(r *http.Request) (any, error) {
	e, err := s.lora(r)
	if err != nil {
		return nil, err
	}
	var req SyncRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	to, err := s.resolveTarget(req.To)
	if err != nil {
		return nil, err
	}
	t := s.startSync(e, to, req)
	return t, nil
}

// resolveTarget turns pod:ID into the pod's LoRA folder over direct SSH.
func (s *Server) resolveTarget(to string) (string, error) {
	to = strings.TrimSpace(to)
	if to == "" {
		return "", errorf(http.StatusBadRequest, "to: give a LoRA folder (path, ssh://, s3://, https://) or pod:ID")
	}
	id, ok := strings.CutPrefix(to, "pod:")
	if !ok {
		if !strings.Contains(to, "://") && !filepath.IsAbs(to) {
			return "", errorf(http.StatusBadRequest, "to: a local folder must be an absolute path")
		}
		return to, nil
	}
	s.mu.RLock()
	st := s.pods[id]
	s.mu.RUnlock()
	if st == nil {
		return "", errorf(http.StatusNotFound, "pod %q not found", id)
	}
	u, ok := st.view.SSHURL()
	if !ok {
		return "", errorf(http.StatusConflict, "pod %s has no public SSH port (status %s)", id, st.view.Status)
	}
	return strings.TrimSuffix(u, "/") + "/workspace/models/lora", nil
}

// PodItem is a pod with what the sampler last read of it.
type PodItem struct {
	pods.View
	CostSoFar float64     `json:"cost_so_far"`
	UptimeS   float64     `json:"uptime_s"`
	IdleS     float64     `json:"idle_s"`
	GPUs      []gpu.GPU   `json:"gpus"`
	GPUError  string      `json:"gpu_error,omitempty"`
	Scope     *ScopeState `json:"scope,omitempty"`
}

func (s *Server) ensurePolled(ctx context.Context) {
	s.mu.RLock()
	done := !s.polled.IsZero()
	s.mu.RUnlock()
	if !done {
		s.poll(ctx)
	}
}

func (s *Server) podItem(st *podState, now time.Time) PodItem {
	it := PodItem{View: st.view, CostSoFar: st.view.CostSoFar(now), UptimeS: st.view.Uptime(now).Seconds(),
		GPUs: st.gpus, GPUError: st.gpuErr, Scope: st.scope}
	if it.GPUs == nil {
		it.GPUs = []gpu.GPU{}
	}
	if st.view.Status == provider.StatusRunning {
		it.IdleS = max(0, now.Sub(st.lastBusy).Seconds())
	}
	return it
}

func (s *Server) podItems(ctx context.Context) ([]PodItem, string) {
	s.ensurePolled(ctx)
	now := time.Now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]PodItem, 0, len(s.podOrder))
	for _, id := range s.podOrder {
		out = append(out, s.podItem(s.pods[id], now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, s.podErr
}

func (s *Server) listPodsAPI(r *http.Request) (any, error) {
	p, err := paging(r)
	if err != nil {
		return nil, err
	}
	items, note := s.podItems(r.Context())
	l := page(items, func(x PodItem) string { return x.ID }, p)
	l.Note = note
	return l, nil
}

func (s *Server) getPod(r *http.Request) (any, error) {
	s.ensurePolled(r.Context())
	id := r.PathValue("id")
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.pods[id]
	if st == nil {
		return nil, errorf(http.StatusNotFound, "pod %q not found", id)
	}
	return s.podItem(st, time.Now()), nil
}

// GPUSeries is a pod's GPU readings after a time, oldest first.
type GPUSeries struct {
	Pod     string      `json:"pod"`
	Samples []GPUSample `json:"samples"`
	Last    int64       `json:"last"` // the t to ask since next
}

func (s *Server) podGPU(r *http.Request) (any, error) {
	s.ensurePolled(r.Context())
	id := r.PathValue("id")
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, errorf(http.StatusBadRequest, "since %q: want Unix milliseconds", v)
		}
		since = n
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.pods[id]
	if st == nil {
		return nil, errorf(http.StatusNotFound, "pod %q not found", id)
	}
	out := GPUSeries{Pod: id, Samples: []GPUSample{}, Last: since}
	for _, x := range st.hist {
		if x.T > since {
			out.Samples = append(out.Samples, x)
			out.Last = x.T
		}
	}
	return out, nil
}

// ActionRequest confirms an action that cannot be undone: Confirm must repeat the
// pod's id to terminate it.
type ActionRequest struct {
	Confirm string `json:"confirm,omitempty"`
}

// ActionResult is what an action did.
type ActionResult struct {
	ID     string `json:"id"`
	Action string `json:"action"`
	Status string `json:"status,omitempty"`
}

func (s *Server) podAction(r *http.Request) (any, error) {
	id, action := r.PathValue("id"), r.PathValue("action")
	var req ActionRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if action != "stop" && action != "start" && action != "terminate" {
		return nil, errorf(http.StatusNotFound, "pod action %q: stop, start or terminate", action)
	}
	if s.opt.RunPod == nil {
		return nil, errorf(http.StatusServiceUnavailable, "RunPod is not configured (RUNPOD_API_KEY)")
	}
	s.ensurePolled(r.Context())
	s.mu.RLock()
	st := s.pods[id]
	s.mu.RUnlock()
	if st == nil || id == LocalPod {
		return nil, errorf(http.StatusNotFound, "pod %q not found", id)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	var err error
	switch action {
	case "stop":
		err = s.opt.RunPod.Stop(ctx, id)
	case "start":
		err = s.opt.RunPod.Start(ctx, id)
	case "terminate":
		if req.Confirm != id {
			return nil, errorf(http.StatusBadRequest, "terminate: confirm with {\"confirm\": %q}", id)
		}
		err = s.opt.RunPod.Terminate(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	if action != "start" {
		s.recordStop(ctx, id, action)
	}
	s.log.Info("pod action", "pod", id, "action", action)
	s.metrics.actions.WithLabelValues("pod_" + action).Inc()
	s.poll(ctx)
	res := ActionResult{ID: id, Action: action}
	s.mu.RLock()
	if st := s.pods[id]; st != nil {
		res.Status = st.view.Status
	} else {
		res.Status = provider.StatusTerminated
	}
	s.mu.RUnlock()
	return res, nil
}

// Deploy is a pod that serves Scope, with what its Scope said (the fields of
// `scopectl status --json` where they exist there).
type Deploy struct {
	Target  string      `json:"target"`
	Pod     PodItem     `json:"pod"`
	Scope   string      `json:"scope"`
	Healthy bool        `json:"healthy"`
	State   *ScopeState `json:"scope_state"`
	GPUs    []gpu.GPU   `json:"gpus"`
	Errors  []string    `json:"errors,omitempty"`
}

func (s *Server) listDeploys(r *http.Request) (any, error) {
	p, err := paging(r)
	if err != nil {
		return nil, err
	}
	items, _ := s.podItems(r.Context())
	var out []Deploy
	for _, it := range items {
		if it.Scope == nil {
			continue
		}
		d := Deploy{Target: "pod " + it.ID, Pod: it, Scope: it.Scope.URL, Healthy: it.Scope.Up, State: it.Scope, GPUs: it.GPUs}
		if it.ID == LocalPod {
			d.Target = "local"
		}
		if it.Scope.Error != "" {
			d.Errors = append(d.Errors, it.Scope.Error)
		}
		if it.GPUError != "" {
			d.Errors = append(d.Errors, it.GPUError)
		}
		out = append(out, d)
	}
	l := page(out, func(d Deploy) string { return d.Pod.ID }, p)
	return DeployList{List: l, Jobs: s.deploys.list()}, nil
}

// DeployList is GET /api/v1/deploys: the pods that serve Scope (paged), and the deploys
// this server ran or runs in the background, newest first.
type DeployList struct {
	List[Deploy]
	Jobs []DeployJob `json:"jobs"`
}

// DeployRequest is POST /api/v1/deploys: the flags of `scopectl deploy`, as JSON.
// One of host (ssh://user@host:port, a Docker host), pod (an existing RunPod pod) or
// new (a RunPod pod created for it, with gpu).
type DeployRequest struct {
	Host     string            `json:"host,omitempty"`
	Pod      string            `json:"pod,omitempty"`
	New      bool              `json:"new,omitempty"`
	Image    string            `json:"image,omitempty"`
	Name     string            `json:"name,omitempty"`
	Port     int               `json:"port,omitempty"`
	NoGPUs   bool              `json:"no_gpus,omitempty"`
	Volume   string            `json:"volume,omitempty"`
	LoRADir  string            `json:"scope_lora_dir,omitempty"`
	Pull     string            `json:"pull,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	LoRAs    []string          `json:"loras,omitempty"` // NAME[:SCALE]
	Pipeline string            `json:"pipeline,omitempty"`
	DryRun   bool              `json:"dry_run,omitempty"`
	Wait     string            `json:"wait,omitempty"` // a duration, default 10m
	// With new:
	GPU             string  `json:"gpu,omitempty"`
	GPUCount        int     `json:"gpu_count,omitempty"`
	Cloud           string  `json:"cloud,omitempty"`
	VolumeGB        int     `json:"volume_gb,omitempty"`
	ContainerDiskGB int     `json:"container_disk_gb,omitempty"`
	NetworkVolume   string  `json:"network_volume,omitempty"`
	MaxPrice        float64 `json:"max_price,omitempty"`
	IdleStop        string  `json:"idle_stop,omitempty"` // a duration, default 30m; "0" disables
	MaxHours        float64 `json:"max_hours,omitempty"`
	Keep            bool    `json:"keep,omitempty"`
}

// input is the deploy core's input for req, with the CLI's defaults.
func (req DeployRequest) input() (deploy.DeployInput, error) {
	in := deploy.DeployInput{Host: req.Host, Pod: req.Pod, New: req.New, Env: req.Env, LoRAs: req.LoRAs, Pipeline: req.Pipeline,
		DryRun: req.DryRun, Keep: req.Keep, MaxHours: req.MaxHours, IdleStop: DefaultIdleStop,
		Spec: deploy.Spec{Image: req.Image, Name: req.Name, Port: req.Port, GPUs: !req.NoGPUs, Volume: req.Volume, LoRADir: req.LoRADir, Pull: req.Pull},
		Create: provider.CreateSpec{GPUType: req.GPU, GPUCount: max(req.GPUCount, 1), Cloud: cmp.Or(req.Cloud, "secure"),
			VolumeGB: cmp.Or(req.VolumeGB, 50), ContainerDiskGB: cmp.Or(req.ContainerDiskGB, 30), NetworkVolumeID: req.NetworkVolume, MaxPrice: req.MaxPrice},
		VolumeGBSet: req.VolumeGB != 0}
	for _, d := range []struct {
		name, v string
		to      *time.Duration
	}{{"wait", req.Wait, &in.Wait}, {"idle_stop", req.IdleStop, &in.IdleStop}} {
		if d.v == "" {
			continue
		}
		if d.v == "0" {
			*d.to = 0
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v < 0 {
			return in, errorf(http.StatusBadRequest, "%s: %q is not a duration (e.g. 30m)", d.name, d.v)
		}
		*d.to = v
	}
	if req.MaxHours < 0 || req.MaxPrice < 0 || req.Port < 0 || req.GPUCount < 0 || req.VolumeGB < 0 || req.ContainerDiskGB < 0 {
		return in, errorf(http.StatusBadRequest, "numbers must not be negative")
	}
	if in.Wait == 0 {
		in.Wait = 10 * time.Minute
	}
	return in, nil
}

// DefaultIdleStop is the idle limit a pod a deploy creates gets unless told otherwise
// (as `scopectl deploy --new`).
const DefaultIdleStop = 30 * time.Minute

// deployer is the deploy core: the face's (Options.Deployer), else one over the
// library, RunPod and the remote env that cannot create pods.
func (s *Server) deployer() *deploy.Deployer {
	if s.opt.Deployer != nil {
		return s.opt.Deployer
	}
	d := &deploy.Deployer{Lib: s.opt.Lib, OpenRemote: func(ctx context.Context, target, knownHosts string) (remote.Remote, error) {
		env := s.opt.RemoteEnv
		if knownHosts != "" {
			env.KnownHosts, env.AcceptNewHostKey = knownHosts, true
		}
		return remote.Open(ctx, target, env)
	}}
	if s.opt.RunPod != nil { // never a typed nil in the interface
		d.RunPod = s.opt.RunPod
	}
	if s.opt.Lib != nil {
		if ps, ok := s.opt.Lib.Store.(store.PodStore); ok {
			d.Pods = ps
		}
	}
	return d
}

// JobItem is a training job: its record, its state on the machine, its cost.
type JobItem struct {
	train.StatusResult
	Local      bool   `json:"local"` // its folder is on this machine
	StateError string `json:"state_error,omitempty"`
}

func (s *Server) jobItems(ctx context.Context) []JobItem {
	s.ensurePolled(ctx)
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]JobItem, 0, len(s.jobs))
	for _, j := range s.jobs {
		out = append(out, JobItem{StatusResult: j.res, Local: j.local, StateError: j.err})
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Job.ID < out[k].Job.ID })
	return out
}

func (s *Server) listJobs(r *http.Request) (any, error) {
	p, err := paging(r)
	if err != nil {
		return nil, err
	}
	if _, ok := s.opt.Lib.Store.(store.TrainStore); !ok {
		return List[JobItem]{Items: []JobItem{}, Note: "this store does not record training jobs"}, nil
	}
	return page(s.jobItems(r.Context()), func(j JobItem) string { return j.Job.ID }, p), nil
}

func (s *Server) job(r *http.Request) (JobItem, error) {
	id := r.PathValue("id")
	for _, j := range s.jobItems(r.Context()) {
		if j.Job.ID == id {
			return j, nil
		}
	}
	return JobItem{}, errorf(http.StatusNotFound, "job %q not found", id)
}

// JobDetail is a job with its checkpoints and their library entries.
type JobDetail struct {
	JobItem
	Checkpoints []JobCheckpoint `json:"checkpoints"`
}

// JobCheckpoint is a checkpoint of a job and the library entry it became, if any.
type JobCheckpoint struct {
	Step   int      `json:"step"`
	File   string   `json:"file"`
	SHA256 string   `json:"sha256"`
	Size   int64    `json:"size"`
	Loss   *float64 `json:"loss,omitempty"`
	LoRA   string   `json:"lora,omitempty"` // library name
}

func (s *Server) getJob(r *http.Request) (any, error) {
	j, err := s.job(r)
	if err != nil {
		return nil, err
	}
	d := JobDetail{JobItem: j, Checkpoints: []JobCheckpoint{}}
	seen := map[string]bool{}
	add := func(c JobCheckpoint) {
		if seen[c.File] {
			return
		}
		seen[c.File] = true
		if c.SHA256 != "" {
			if e, err := s.opt.Lib.Store.GetBySHA(r.Context(), c.SHA256); err == nil {
				c.LoRA = e.Name
			}
		}
		d.Checkpoints = append(d.Checkpoints, c)
	}
	if ts, ok := s.opt.Lib.Store.(store.TrainStore); ok {
		cs, _ := ts.ListTrainCheckpoints(r.Context(), j.Job.ID)
		for _, c := range cs {
			add(JobCheckpoint{Step: c.Step, File: c.File, SHA256: c.SHA256, Size: c.Size, Loss: c.Loss})
		}
	}
	if j.State != nil {
		for _, c := range j.State.Checkpoints {
			add(JobCheckpoint{Step: c.Step, File: c.File, SHA256: c.SHA256, Size: c.Size, Loss: c.Loss})
		}
	}
	sort.Slice(d.Checkpoints, func(a, b int) bool { return d.Checkpoints[a].Step < d.Checkpoints[b].Step })
	return d, nil
}

// LossSeries is a job's loss log: its series keys, and the points of one after a step.
type LossSeries struct {
	Keys     []aitk.MetricKey `json:"keys"`
	Key      string           `json:"key"`
	Points   [][2]float64     `json:"points"` // [step, value]
	LastStep int              `json:"last_step"`
}

func (s *Server) localJob(r *http.Request) (JobItem, error) {
	j, err := s.job(r)
	if err != nil {
		return j, err
	}
	if !j.Local {
		return j, errorf(http.StatusNotFound, "job %s runs on %s: its loss log, samples and log show in scopectl serve there", j.Job.ID, j.Job.Target)
	}
	return j, nil
}

func (s *Server) jobLoss(r *http.Request) (any, error) {
	j, err := s.localJob(r)
	if err != nil {
		return nil, err
	}
	since := -1
	if v := r.URL.Query().Get("since_step"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < -1 {
			return nil, errorf(http.StatusBadRequest, "since_step %q: want a step number", v)
		}
		since = n
	}
	ll, err := aitk.OpenLossLog(r.Context(), filepath.Join(j.Job.SaveDir, aitk.LossLogName))
	if err != nil {
		return nil, notFound(err, "loss log of job "+j.Job.ID)
	}
	defer ll.Close()
	keys, err := ll.Keys(r.Context())
	if err != nil {
		return nil, err
	}
	out := LossSeries{Keys: keys, Points: [][2]float64{}, LastStep: since}
	if out.Keys == nil {
		out.Keys = []aitk.MetricKey{}
	}
	key := r.URL.Query().Get("key")
	if key == "" {
		for _, k := range keys {
			if strings.HasPrefix(k.Key, "loss") {
				key = k.Key
				break
			}
		}
	}
	out.Key = key
	if key == "" {
		return out, nil
	}
	pts, err := ll.Series(r.Context(), key, aitk.SeriesOptions{SinceStep: since})
	if err != nil {
		return nil, err
	}
	for _, p := range pts {
		if !p.Null && p.Text == "" {
			out.Points = append(out.Points, [2]float64{float64(p.Step), p.Value})
		}
		out.LastStep = p.Step
	}
	return out, nil
}

// LogChunk is a job's log from Offset to Next.
type LogChunk struct {
	Offset int64  `json:"offset"`
	Next   int64  `json:"next"`
	Text   string `json:"text"`
}

const logChunk = 256 << 10

func (s *Server) jobLog(r *http.Request) (any, error) {
	j, err := s.localJob(r)
	if err != nil {
		return nil, err
	}
	var off int64
	if v := r.URL.Query().Get("offset"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, errorf(http.StatusBadRequest, "offset %q: want a byte offset", v)
		}
		off = n
	}
	f, err := os.Open(filepath.Join(j.Job.JobDir, train.LogFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return LogChunk{Offset: off, Next: off}, nil
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if off > fi.Size() {
		off = 0 // the log was replaced
	}
	buf := make([]byte, min(logChunk, fi.Size()-off))
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return LogChunk{Offset: off, Next: off + int64(n), Text: strings.ToValidUTF8(string(buf[:n]), "\uFFFD")}, nil
}

// SampleGrid is a job's samples: one row per step, one column per prompt.
type SampleGrid struct {
	Prompts int         `json:"prompts"`
	Rows    []SampleRow `json:"rows"`
}

// SampleRow is the samples of one step; Files[i] is prompt i's ("" if missing).
type SampleRow struct {
	Step  int      `json:"step"`
	Files []string `json:"files"`
}

func (s *Server) jobSamples(r *http.Request) (any, error) {
	j, err := s.localJob(r)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(j.Job.SaveDir, "samples"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	by := map[int]map[int]string{}
	out := SampleGrid{Rows: []SampleRow{}}
	for _, e := range ents {
		sn, ok := aitk.ParseSampleName(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		if by[sn.Step] == nil {
			by[sn.Step] = map[int]string{}
		}
		if old, ok := by[sn.Step][sn.Index]; !ok || old < e.Name() {
			by[sn.Step][sn.Index] = e.Name()
		}
		out.Prompts = max(out.Prompts, sn.Index+1)
	}
	for step, m := range by {
		row := SampleRow{Step: step, Files: make([]string, out.Prompts)}
		for i, f := range m {
			row.Files[i] = f
		}
		out.Rows = append(out.Rows, row)
	}
	sort.Slice(out.Rows, func(a, b int) bool { return out.Rows[a].Step < out.Rows[b].Step })
	return out, nil
}

func (s *Server) jobSampleFile(w http.ResponseWriter, r *http.Request) {
	j, err := s.localJob(r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	name := r.PathValue("file")
	if _, ok := aitk.ParseSampleName(name); !ok || filepath.Base(name) != name {
		s.writeErr(w, errorf(http.StatusBadRequest, "not a sample name"))
		return
	}
	s.serveFile(w, r, filepath.Join(j.Job.SaveDir, "samples", name), name)
}

func (s *Server) jobAction(r *http.Request) (any, error) {
	var req ActionRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	action := train.ControlAction(r.PathValue("action"))
	if action != train.CtlStop && action != train.CtlSaveNow && action != train.CtlSampleNow {
		return nil, errorf(http.StatusNotFound, "job action %q: stop, save-now or sample-now", action)
	}
	j, err := s.job(r)
	if err != nil {
		return nil, err
	}
	var st *train.State
	switch {
	case j.Local:
		st, err = train.Control(r.Context(), j.Job.JobDir, action)
	case s.opt.Trainer != nil:
		switch action {
		case train.CtlStop:
			st, err = s.opt.Trainer.Stop(r.Context(), j.Job.ID)
		case train.CtlSaveNow:
			st, err = s.opt.Trainer.SaveNow(r.Context(), j.Job.ID)
		default:
			st, err = s.opt.Trainer.SampleNow(r.Context(), j.Job.ID)
		}
	default:
		return nil, errorf(http.StatusServiceUnavailable, "job %s runs on another machine that this server cannot reach", j.Job.ID)
	}
	if err != nil {
		return nil, err
	}
	s.log.Info("job action", "job", j.Job.ID, "action", string(action))
	s.metrics.actions.WithLabelValues("job_" + strings.ReplaceAll(string(action), "-", "_")).Inc()
	s.kick()
	return st, nil
}

var _ = library.ErrRefused
