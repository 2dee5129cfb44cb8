package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/pods"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/train"
)

// LocalPod is the id this machine has in the pods list.
const LocalPod = "local"

// GPUSample is one reading of one GPU, in base units.
type GPUSample struct {
	T           int64   `json:"t"` // Unix milliseconds
	GPU         int     `json:"gpu"`
	Util        float64 `json:"utilization_ratio"`
	MemUsed     int64   `json:"memory_used_bytes"`
	MemTotal    int64   `json:"memory_total_bytes"`
	PowerW      float64 `json:"power_watts"`
	TemperatueC int     `json:"temperature_celsius"`
}

// ScopeState is what a Scope server said when last asked.
type ScopeState struct {
	URL       string                `json:"url"`
	Up        bool                  `json:"up"`
	Health    *scope.Health         `json:"health,omitempty"`
	Pipeline  *scope.PipelineStatus `json:"pipeline,omitempty"`
	Sessions  int                   `json:"sessions"`
	OutputFPS float64               `json:"output_fps"`
	Error     string                `json:"error,omitempty"`
	CheckedAt time.Time             `json:"checked_at"`
}

type podState struct {
	view     pods.View
	gpus     []gpu.GPU
	gpuErr   string
	hist     []GPUSample
	lastBusy time.Time
	scope    *ScopeState
}

type jobState struct {
	res      train.StatusResult
	local    bool
	err      string
	remoteAt time.Time
}

const mib = 1 << 20

func samplesOf(gs []gpu.GPU, now time.Time) []GPUSample {
	out := make([]GPUSample, 0, len(gs))
	for _, g := range gs {
		out = append(out, GPUSample{T: now.UnixMilli(), GPU: g.Index, Util: float64(g.UtilizationPct) / 100,
			MemUsed: g.MemoryUsedMiB * mib, MemTotal: g.MemoryTotalMiB * mib, PowerW: g.PowerW, TemperatueC: g.TemperatureC})
	}
	return out
}

func (s *Server) scopeURL(p provider.Pod) string {
	if p.ID == LocalPod {
		return s.opt.LocalScope
	}
	if s.opt.ScopeURL != nil {
		return s.opt.ScopeURL(p)
	}
	if s.opt.RunPod != nil && p.Status == provider.StatusRunning && strings.Contains(strings.ToLower(p.Image), "scope") {
		return s.opt.RunPod.ProxyURL(p.ID, deploy.ContainerPort)
	}
	return ""
}

// listPods is every pod the sampler watches: RunPod's (reconciled with the store),
// the SSH hosts scopectl recorded, and this machine when it has a GPU or a Scope.
// rp is RunPod's listing when it succeeded (nil otherwise).
func (s *Server) listPods(ctx context.Context) (out []pods.View, rp []pods.View, _ string) {
	var why []string
	ps, _ := s.opt.Lib.Store.(store.PodStore)
	if s.opt.RunPod != nil && ps != nil {
		vs, err := pods.Reconcile(ctx, s.opt.RunPod, ps)
		if err != nil {
			why = append(why, "RunPod: "+err.Error())
		} else {
			rp = vs
		}
		out = append(out, vs...)
	} else if s.opt.RunPod == nil {
		why = append(why, "RunPod pods are not listed: RUNPOD_API_KEY is not set")
	}
	if ps != nil {
		recs, err := ps.ListPods(ctx, true)
		if err == nil {
			for _, r := range recs {
				if r.Provider == runpod.Name {
					continue
				}
				st := r.LastSeenStatus
				if st == "" {
					st = "UNKNOWN"
				}
				out = append(out, pods.View{Pod: provider.Pod{ID: r.ID, Name: r.Name, Status: st, GPUType: r.GPUType,
					GPUCount: r.GPUCount, CostPerHr: r.CostPerHr, CreatedAt: r.CreatedAt},
					Recorded: true, Limits: pods.LimitsOf(provider.Pod{}, &r), Note: r.Provider + " host " + r.Address})
			}
		}
	}
	if s.opt.LocalGPU != nil || s.opt.LocalScope != "" {
		host, _ := os.Hostname()
		out = append(out, pods.View{Pod: provider.Pod{ID: LocalPod, Name: host, Status: provider.StatusRunning,
			CreatedAt: s.started, StartedAt: s.started}, Note: "this machine"})
	}
	return out, rp, strings.Join(why, "; ")
}

func (s *Server) poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(s.opt.Interval*3, 15*time.Second))
	defer cancel()
	now := time.Now()
	views, rp, why := s.listPods(ctx)
	if rp != nil {
		s.observeLedger(ctx, rp)
	}

	s.mu.RLock()
	old := s.pods
	s.mu.RUnlock()

	next := map[string]*podState{}
	order := make([]string, 0, len(views))
	var wg sync.WaitGroup
	var nmu sync.Mutex
	for _, v := range views {
		st := &podState{view: v}
		if o := old[v.ID]; o != nil {
			st.hist, st.lastBusy, st.scope = o.hist, o.lastBusy, o.scope
		}
		if st.lastBusy.IsZero() {
			st.lastBusy = v.StartedAt
			if st.lastBusy.IsZero() {
				st.lastBusy = now
			}
		}
		next[v.ID] = st
		order = append(order, v.ID)
		if v.Status != provider.StatusRunning {
			st.scope = nil
			continue
		}
		wg.Add(1)
		go func(st *podState) {
			defer wg.Done()
			gs, gerr := s.readGPU(ctx, st.view.Pod)
			sc := s.readScope(ctx, st.view.Pod)
			nmu.Lock()
			defer nmu.Unlock()
			if gerr != nil {
				st.gpuErr = oneLine(s.red.Redact(gerr.Error()))
			}
			st.gpus = gs
			if len(gs) > 0 {
				st.hist = append(append([]GPUSample(nil), st.hist...), samplesOf(gs, now)...)
				if n := s.opt.History * len(gs); len(st.hist) > n {
					st.hist = st.hist[len(st.hist)-n:]
				}
				for _, g := range gs {
					if g.UtilizationPct >= 1 {
						st.lastBusy = now
					}
				}
			}
			if sc != nil {
				st.scope = sc
				if sc.Sessions > 0 || (sc.Pipeline != nil && sc.Pipeline.Status == scope.StatusLoading) {
					st.lastBusy = now
				}
			}
		}(st)
	}
	wg.Wait()
	jobs := s.pollJobs(ctx)

	s.mu.Lock()
	s.pods, s.podOrder, s.podErr, s.polled = next, order, why, now
	if jobs != nil {
		s.jobs = jobs
	}
	s.mu.Unlock()
}

func (s *Server) readGPU(ctx context.Context, p provider.Pod) ([]gpu.GPU, error) {
	var src gpu.Source
	if p.ID == LocalPod {
		src = s.opt.LocalGPU
	} else if s.opt.PodGPU != nil {
		var err error
		if src, err = s.opt.PodGPU(ctx, p); err != nil {
			return nil, err
		}
	}
	if src == nil {
		return nil, nil
	}
	return src.GPUs(ctx)
}

// readScope asks a pod's Scope for its health, pipeline and streaming sessions.
func (s *Server) readScope(ctx context.Context, p provider.Pod) *ScopeState {
	u := s.scopeURL(p)
	if u == "" {
		return nil
	}
	st := &ScopeState{URL: u, CheckedAt: time.Now().UTC()}
	c := &scope.Client{Base: u, HTTP: s.opt.HTTP}
	h, err := c.Health(ctx)
	if err != nil {
		st.Error = oneLine(s.red.Redact(err.Error()))
		return st
	}
	st.Up, st.Health = true, h
	if ps, err := c.PipelineStatus(ctx); err == nil {
		st.Pipeline = ps
	} else {
		st.Error = oneLine(s.red.Redact(err.Error()))
	}
	st.Sessions, st.OutputFPS = s.sessionMetrics(ctx, u)
	return st
}

// sessionMetrics reads Scope's GET /api/v1/session/metrics: {"sessions": {id: {"fps": …}}}.
func (s *Server) sessionMetrics(ctx context.Context, base string) (int, float64) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/api/v1/session/metrics", nil)
	if err != nil {
		return 0, 0
	}
	resp, err := s.opt.HTTP.Do(req)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0
	}
	var m struct {
		Sessions map[string]struct {
			FPS float64 `json:"fps"`
		} `json:"sessions"`
	}
	if json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&m) != nil {
		return 0, 0
	}
	fps := 0.0
	for _, x := range m.Sessions {
		fps += x.FPS
	}
	return len(m.Sessions), fps
}

// localJobDir says whether the job's folder is on this machine (serve runs on the
// training machine): its state, loss log, samples and log are then read directly.
func localJobDir(j store.TrainJob) bool {
	if j.JobDir == "" || !filepath.IsAbs(j.JobDir) {
		return false
	}
	_, err := os.Stat(filepath.Join(j.JobDir, train.SpecFile))
	return err == nil
}

// remoteEvery is how often a job on another machine is asked how it goes (over SSH).
const remoteEvery = 30 * time.Second

func (s *Server) pollJobs(ctx context.Context) map[string]*jobState {
	ts, ok := s.opt.Lib.Store.(store.TrainStore)
	if !ok {
		return nil
	}
	list, err := ts.ListTrainJobs(ctx)
	if err != nil {
		return nil
	}
	s.mu.RLock()
	old := s.jobs
	s.mu.RUnlock()
	out := map[string]*jobState{}
	for _, j := range list {
		js := &jobState{res: train.StatusResult{Job: j, Cost: jobCost(j)}}
		if o := old[j.ID]; o != nil {
			js.res.State, js.remoteAt, js.err = o.res.State, o.remoteAt, o.err
		}
		switch {
		case localJobDir(j):
			js.local = true
			st, err := train.Control(ctx, j.JobDir, train.CtlStatus)
			if err != nil {
				js.err = oneLine(err.Error())
			} else {
				js.res.State, js.err = st, ""
			}
		case s.opt.Trainer != nil && j.EndedAt == nil && time.Since(js.remoteAt) > remoteEvery:
			js.remoteAt = time.Now()
			r, err := s.opt.Trainer.Status(ctx, j.ID)
			if err != nil {
				js.err = oneLine(s.red.Redact(err.Error()))
			} else {
				js.res, js.err = *r, ""
			}
		case s.opt.Trainer == nil && js.res.State == nil:
			js.err = "the job runs on another machine; its live state shows where scopectl can reach it"
		}
		out[j.ID] = js
	}
	return out
}

func jobCost(j store.TrainJob) float64 {
	end := time.Now()
	if j.EndedAt != nil {
		end = *j.EndedAt
	}
	return j.CostPerHr * max(0, end.Sub(j.StartedAt).Hours())
}

func fmtErr(format string, a ...any) string { return oneLine(fmt.Sprintf(format, a...)) }

// SSHGPU reads a pod's GPUs with nvidia-smi over direct SSH to its public port 22
// (one connection per reading).
func SSHGPU(env remote.Env) func(ctx context.Context, p provider.Pod) (gpu.Source, error) {
	return func(ctx context.Context, p provider.Pod) (gpu.Source, error) {
		u, ok := p.SSHURL()
		if !ok {
			return nil, fmt.Errorf("pod %s has no public SSH port", p.ID)
		}
		return sshGPU{url: u, env: env}, nil
	}
}

type sshGPU struct {
	url string
	env remote.Env
}

func (g sshGPU) GPUs(ctx context.Context) ([]gpu.GPU, error) {
	r, err := remote.Open(ctx, g.url, g.env)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	run, ok := r.(remote.Runner)
	if !ok {
		return nil, fmt.Errorf("%s cannot run commands", r)
	}
	return gpu.Over(run, r.String()).GPUs(ctx)
}
