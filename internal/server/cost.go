package server

// The cost view: what `scopectl cost` shows, from the same ledger through the same
// ledger.Build. The sampler keeps the ledger up to date as `scopectl pod ls` does
// (RunPod's pods at every sample, its network volumes every VolumeEvery), so a page
// left open, with no command run meanwhile, still shows what is spent.

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/pods"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

// CostReport is GET /api/v1/cost: the report `scopectl cost --json` prints (its field
// names), with each network volume's size and monthly rate beside its dollars.
type CostReport struct {
	ledger.Report
	Volumes []VolumeCost `json:"volumes"`
}

// VolumeCost is a network volume's line of the report: its dollars since the report's
// start, its size (now, or when last seen) and what that size costs per month.
type VolumeCost struct {
	ledger.Line
	SizeGB  int     `json:"size_gb"`
	Monthly float64 `json:"dollars_per_month"`
}

// costTTL is how long a report without ?since is reused: the page and scrapes in one
// moment share one SQLite read.
const costTTL = 2 * time.Second

type costCache struct {
	mu  sync.Mutex
	at  time.Time // zero: make it again
	rep *CostReport
}

func (s *Server) ledgerStore() (store.LedgerStore, bool) {
	ls, ok := s.opt.Lib.Store.(store.LedgerStore)
	return ls, ok
}

// costReport is the ledger's report since `since` (zero: everything, shared for costTTL).
func (s *Server) costReport(ctx context.Context, since time.Time) (*CostReport, error) {
	if !since.IsZero() {
		return s.buildCost(ctx, since)
	}
	c := &s.cost
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) > costTTL {
		rep, err := s.buildCost(ctx, time.Time{})
		if err != nil {
			return nil, err // not kept: a canceled request's error is not the next one's
		}
		c.rep, c.at = rep, time.Now()
	}
	return c.rep, nil
}

// forgetCost drops the shared report (the ledger just changed).
func (s *Server) forgetCost() {
	s.cost.mu.Lock()
	s.cost.at = time.Time{}
	s.cost.mu.Unlock()
}

func (s *Server) buildCost(ctx context.Context, since time.Time) (*CostReport, error) {
	ls, ok := s.ledgerStore()
	if !ok {
		return nil, errorf(http.StatusNotImplemented, "this store keeps no cost ledger")
	}
	runs, err := ls.Runs(ctx, since)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	live, asked := s.live, s.liveOK
	s.mu.RUnlock()
	rep := ledger.Build(runs, since, time.Now(), live)
	if !asked {
		why := "RunPod not asked: RUNPOD_API_KEY is not set; the ledger as last seen"
		if s.opt.RunPod != nil {
			why = "RunPod not listed yet (or its listing failed): the ledger as last seen"
		}
		rep.Notes = append(rep.Notes, why)
	}
	sizes := ledger.VolumeSizes(runs)
	out := &CostReport{Report: rep, Volumes: make([]VolumeCost, 0, len(rep.Volumes))}
	for _, l := range rep.Volumes {
		gb := sizes[l.Key]
		out.Volumes = append(out.Volumes, VolumeCost{Line: l, SizeGB: gb, Monthly: ledger.NetworkMonthly(gb)})
	}
	return out, nil
}

// getCost is GET /api/v1/cost[?since=RFC 3339 time].
func (s *Server) getCost(r *http.Request) (any, error) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "since %q: want an RFC 3339 time, e.g. 2026-03-01T00:00:00Z", oneLine(v))
		}
		since = t
	}
	s.ensurePolled(r.Context())
	return s.costReport(r.Context(), since)
}

// observeLedger brings the ledger up to date with RunPod's pods as just listed (all
// of them: a pod missing from a successful listing is gone) and, every VolumeEvery,
// with its network volumes. What the ledger notices is logged, once per change.
func (s *Server) observeLedger(ctx context.Context, rp []pods.View) {
	ls, ok := s.ledgerStore()
	if !ok || s.opt.RunPod == nil {
		return
	}
	s.ledgerMu.Lock() // one observation at a time (an action's poll and the sampler's)
	defer s.ledgerMu.Unlock()
	ps, _ := s.opt.Lib.Store.(store.PodStore)
	recs := map[string]store.Pod{}
	if ps != nil {
		if all, err := ps.ListPods(ctx, false); err == nil {
			for _, r := range all {
				if r.ID != "" {
					recs[r.ID] = r
				}
			}
		}
	}
	list := make([]provider.Pod, 0, len(rp))
	live := make(map[string]bool, len(rp))
	for _, v := range rp {
		list = append(list, v.Pod)
		live[v.ID] = true
	}
	prov := s.opt.RunPod.Name()
	notes, err := ledger.Observe(ctx, ls, prov, list, recs, time.Now())
	s.ledgerNotes(notes, err)
	if time.Since(s.volumesAt) >= s.opt.VolumeEvery {
		s.volumesAt = time.Now()
		if vols, err := s.opt.RunPod.NetworkVolumes(ctx); err != nil {
			s.log.Warn("network volumes not read (their storage is not in the ledger now)", "error", oneLine(s.red.Redact(err.Error())))
		} else {
			in := make([]ledger.Volume, len(vols))
			for i, v := range vols {
				in[i] = ledger.Volume{ID: v.ID, Name: v.Name, SizeGB: v.SizeGB}
			}
			notes, err := ledger.ObserveVolumes(ctx, ls, prov, in, time.Now())
			s.ledgerNotes(notes, err)
		}
	}
	s.mu.Lock()
	s.live, s.liveOK = live, true
	s.mu.Unlock()
	s.forgetCost()
}

func (s *Server) ledgerNotes(notes []string, err error) {
	for _, n := range notes {
		s.log.Info("cost ledger: " + oneLine(s.red.Redact(n)))
	}
	if err != nil {
		s.log.Warn("cost ledger not updated", "error", oneLine(s.red.Redact(err.Error())))
	}
}

// recordStop writes a stop made from the page into the ledger (as `pod stop` does).
func (s *Server) recordStop(ctx context.Context, id, action string) {
	ls, ok := s.ledgerStore()
	if !ok || s.opt.RunPod == nil {
		return
	}
	if err := ledger.Stopped(ctx, ls, s.opt.RunPod.Name(), id, time.Now(), ledger.EndScopectl, action+" from scopectl serve", 0, nil); err != nil {
		s.log.Warn("cost ledger: the stop was not recorded", "pod", id, "error", oneLine(s.red.Redact(err.Error())))
	}
	s.forgetCost()
}
